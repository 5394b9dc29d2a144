r"""Encoding throughput on a Llama-family port next to its train step.

  python bench/hf_encode_throughput.py [--dims=4096,65536] [--repeats=5]

A random Llama-family config (`trak_jax.hf.LlamaConfig`: grouped-query
attention, SwiGLU, untied head by default) of 10M to 20M parameters, its
random init, and an Adam state after `--adam_steps` train steps on random
data (so that `nu` is not zero). In one process it times:

- the jitted train step: value_and_grad of the mean token loss, the optax
  Adam update and `optax.apply_updates`;
- `TrackStarEncoder.for_module(...).features` (φ, corpus-side encoding) with
  the trackstar_no_hessian preset, correction "adam" (which materialises
  each layer's per-example gradient, `chunk_size` examples at a time) and a
  Kronecker projection at each d of `--dims`.

Timing is interleaved: each of `--repeats` rounds, after a warm-up, runs
the train step once and every encoder once, and the ratio encode/train
(train seconds over encode seconds, i.e. encode tokens/s over train
tokens/s) is taken within each round, so that load from other processes
hits both alike. Reported figures are medians over rounds. Tokens are loss
tokens (batch x (seq_len - 1)). `first_call_seconds` is the first call of
each program, compilation included; `build_seconds` is the encoder's
construction (layout, projection matrices and, for the "energy" layout,
the probe encoder that measures block energies on the batch). XLA's FLOPs
and buffer sizes of each compiled program are printed beside the timings.

Prints one JSON object.
"""

import dataclasses
import json
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import hf, partitioning
from trak_jax import model as model_lib
from trak_jax import projection as projection_lib

_BATCH = flags.DEFINE_integer("batch_size", 8, "Examples per step.")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Tokens per example.")
_DIMS = flags.DEFINE_list("dims", ["4096", "65536"], "Projection dims.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds.")
_ALLOCATION = flags.DEFINE_enum(
  "allocation",
  "energy",
  projection_lib.ALLOCATIONS,
  "Projection layout; 'energy' is measured once, on the batch.",
)
_CHUNK = flags.DEFINE_integer(
  "chunk_size", 8, "Examples per chunk of materialised gradients."
)
_VOCAB = flags.DEFINE_integer("vocab_size", 8192, "Vocabulary.")
_HIDDEN = flags.DEFINE_integer("hidden_size", 256, "Residual width.")
_LAYERS = flags.DEFINE_integer("num_layers", 8, "Decoder layers.")
_HEADS = flags.DEFINE_integer("num_heads", 8, "Query heads.")
_KV_HEADS = flags.DEFINE_integer("num_kv_heads", 2, "Key/value heads.")
_INTERMEDIATE = flags.DEFINE_integer("intermediate_size", 768, "SwiGLU width.")
_TIED = flags.DEFINE_bool("tie_word_embeddings", False, "Tie the head.")
_ADAM_STEPS = flags.DEFINE_integer(
  "adam_steps", 3, "Train steps before the encoders read Adam's nu."
)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam's rate.")

# The parameter range the bench is meant for (the 10M to 20M).
PARAM_RANGE = (10_000_000, 20_000_000)


class TrainState(NamedTuple):
  params: Any  # the module's `params` collection, float32
  opt_state: Any  # optax.adam's state (count, mu, nu)


def llama_config() -> hf.LlamaConfig:
  """The random Llama-family config the flags describe."""
  return hf.LlamaConfig(
    vocab_size=_VOCAB.value,
    hidden_size=_HIDDEN.value,
    num_layers=_LAYERS.value,
    num_heads=_HEADS.value,
    num_kv_heads=_KV_HEADS.value,
    head_dim=_HIDDEN.value // _HEADS.value,
    intermediate_size=_INTERMEDIATE.value,
    tie_word_embeddings=_TIED.value,
  )


def random_batch(vocab_size, batch_size, seq_len, seed=0) -> data_lib.Batch:
  """Uniform token ids; every position but the first carries loss."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab_size, (batch_size, seq_len)).astype(np.int32)
  mask = np.ones((batch_size, seq_len), np.float32)
  mask[:, 0] = 0
  return data_lib.Batch(ids, mask)


def seconds_of(fn: Callable[[], None]) -> float:
  """Seconds of one call of `fn` (which blocks)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def interleaved(
  fns: dict[str, Callable[[], None]], repeats: int
) -> dict[str, list[float]]:
  """Seconds of every fn, `repeats` rounds of one call each, after warm-up."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      times[name].append(seconds_of(fn))
  return times


def analysis(compiled: jax.stages.Compiled) -> dict[str, float]:
  """XLA's figures for a compiled program: FLOPs and its buffer plan."""
  stats = compiled.memory_analysis()
  return {
    "gflops": compiled.cost_analysis()["flops"] / 1e9,
    "temp_bytes": int(stats.temp_size_in_bytes),
    "argument_bytes": int(stats.argument_size_in_bytes),
  }


def init_params(module: nn.Module, mesh) -> Any:
  """Random parameters, unboxed and replicated on `mesh`."""
  ids = jnp.zeros((1, 8), jnp.int32)
  params = nn.unbox(module.init(jax.random.key(0), ids)["params"])
  return jax.device_put(params, partitioning.replicated(mesh))


def make_train_step(module: nn.Module, tx, mesh):
  """A jitted (state, batch) -> (state, mean token loss); donates state."""

  def loss_fn(params, batch):
    logits = module.apply({"params": params}, batch.token_ids)
    losses = model_lib.token_losses(logits, batch.token_ids, batch.loss_mask)
    return losses.sum() / jnp.maximum(batch.loss_mask[:, 1:].sum(), 1.0)

  def step_fn(state: TrainState, batch: data_lib.Batch):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), (
      loss
    )

  rows = partitioning.batch_sharding(mesh)
  replicated = partitioning.replicated(mesh)
  return jax.jit(
    step_fn,
    in_shardings=(replicated, data_lib.Batch(rows, rows)),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def encoder_config(dim: int, block_energy=None) -> encoder_lib.EncoderConfig:
  """The trackstar_no_hessian preset with Adam's correction at `dim`."""
  config = encoder_lib.preset(
    "trackstar_no_hessian",
    correction="adam",
    projection=projection_lib.ProjectionSpec(
      dim=dim, allocation=_ALLOCATION.value, block_energy=block_energy
    ),
  )
  return dataclasses.replace(config, chunk_size=_CHUNK.value)


def build_encoders(module, state: TrainState, batch, mesh) -> dict[str, Any]:
  """{name: (encoder, build seconds)} per d; energies measured once."""
  built, block_energy = {}, None
  for dim in (int(d) for d in _DIMS.value):
    start = time.perf_counter()
    encoder = encoder_lib.TrackStarEncoder.for_module(
      module,
      state.params,
      config=encoder_config(dim, block_energy),
      opt_state=state.opt_state,
      mesh=mesh,
      energy_batches=[batch],
    )
    # Block energies do not depend on d: later d reuse the first's.
    block_energy = encoder.config.projection.block_energy
    built[f"adam_d{dim}"] = (encoder, time.perf_counter() - start)
  return built


class Trainer(NamedTuple):
  once: Callable[[], None]  # one blocking train step over the held state
  first_call_seconds: float  # the first step, compilation included
  figures: dict[str, float]  # `analysis` of the compiled step
  trained: TrainState  # a copy of the state after `steps` steps


def make_trainer(module, tx, batch, mesh, *, steps: int) -> Trainer:
  """Compiles and runs the train step `steps` times from a random init."""
  step = make_train_step(module, tx, mesh)
  params = init_params(module, mesh)
  holder = {"state": TrainState(params, tx.init(params))}

  def once():
    holder["state"], loss = step(holder["state"], batch)
    loss.block_until_ready()

  first = seconds_of(once)
  for _ in range(steps - 1):  # So that Adam's nu is not zero.
    once()
  figures = analysis(step.lower(holder["state"], batch).compile())
  # The step donates its state, so the encoders get a copy.
  trained = jax.tree.map(lambda x: x.copy(), holder["state"])
  return Trainer(once, first, figures, trained)


def encode_figures(name, encoder, build_seconds, first, times, batch, tokens):
  """One encoder's figures from its timed rounds and compiled program."""
  ratios = [t / e for t, e in zip(times["train"], times[name], strict=True)]
  return {
    "dim": encoder.dim,
    "tokens_per_second": tokens / statistics.median(times[name]),
    "ratio_to_train_step": statistics.median(ratios),
    "ratio_min_max": [min(ratios), max(ratios)],
    "build_seconds": build_seconds,
    "first_call_seconds": first,
    "seconds": statistics.median(times[name]),
    **analysis(encoder.lower_features(batch).compile()),
  }


def num_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def run_bench(mesh) -> dict:
  """Every figure of the bench."""
  config = llama_config()
  module = hf.build_module(config)
  batch = random_batch(config.vocab_size, _BATCH.value, _SEQ.value)
  tokens = float(batch.loss_mask.sum())
  trainer = make_trainer(
    module,
    optax.adam(_LEARNING_RATE.value),
    batch,
    mesh,
    steps=max(_ADAM_STEPS.value, 1),
  )
  encoders = build_encoders(module, trainer.trained, batch, mesh)
  fns, first = {"train": trainer.once}, {}
  for name, (encoder, _) in encoders.items():
    fns[name] = lambda e=encoder: e.features(batch).features.block_until_ready()
    first[name] = seconds_of(fns[name])
  times = interleaved(fns, _REPEATS.value)
  train_seconds = statistics.median(times["train"])
  count = num_params(trainer.trained.params)
  return {
    "model": dataclasses.asdict(config),
    "num_params": count,
    "num_params_in_range": PARAM_RANGE[0] <= count <= PARAM_RANGE[1],
    "train_step": {
      "tokens_per_second": tokens / train_seconds,
      "first_call_seconds": trainer.first_call_seconds,
      "seconds": train_seconds,
      **trainer.figures,
    },
    "encode": {
      name: encode_figures(
        name, encoder, build, first[name], times, batch, tokens
      )
      for name, (encoder, build) in encoders.items()
    },
  }


def main(argv):
  del argv
  mesh = partitioning.make_mesh()
  if _BATCH.value % len(jax.devices()):
    raise app.UsageError("--batch_size must divide by the device count")
  result = {
    "batch_size": _BATCH.value,
    "seq_len": _SEQ.value,
    "devices": len(jax.devices()),
    "platform": jax.devices()[0].platform,
    "repeats": _REPEATS.value,
    "allocation": _ALLOCATION.value,
    **run_bench(mesh),
  }
  result["peak_rss_mb"] = (
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  )
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
