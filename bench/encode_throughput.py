r"""Encoder throughput next to a plain training step, in one process.

  python bench/encode_throughput.py [--width_multipliers=1,4] [--repeats=5]

Prints one JSON object with, per width multiplier (d_model and d_ff of the
demo model times it; the default covers the demo model and one 4x wider, at
the same batch and sequence length):

- tokens/s of the jitted train step (forward, backward, Adafactor update);
- tokens/s of corpus-side encoding (`features`, i.e. φ) with the trackstar
  preset (Adafactor correction, Kronecker projection) at d = 2^12 and 2^16,
  and with the `adam` correction, which materialises each layer's
  per-example gradient (`chunk_size` examples at a time);
- each encoder's ratio to the train step, and whether trackstar meets the
  target ratio (`--target_ratio`, 0.9);
- XLA's analysis of each compiled program (the train step and each
  `features` program): FLOPs (`cost_analysis()`), whose ratio to the train
  step's is a load-independent check of the timed ratio, and temp and
  argument bytes (`memory_analysis()`); and the adam path's extra temp and
  argument bytes over trackstar's at the same d (its elementwise scale is
  one float per parameter).

Timing is interleaved: each of `repeats` rounds runs the train step once and
every encoder once, and a ratio is taken within each round, so that load
from other processes on the machine hits numerator and denominator alike.
Reported tokens/s and ratios are medians over rounds, after a warm-up.
"""

import dataclasses
import json
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import app, flags

from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import partitioning
from trak_jax import projection as projection_lib
from trak_jax import train as train_lib

_WIDTHS = flags.DEFINE_list(
  "width_multipliers", ["1", "4"], "d_model and d_ff x each of these."
)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples per step.")
_SEQ = flags.DEFINE_integer("seq_len", 64, "Tokens per example.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds per width.")
_DIMS = flags.DEFINE_list("dims", ["4096", "65536"], "Projection dims.")
_TERMS = flags.DEFINE_list(
  "kronecker_terms",
  ["1"],
  "r values (ProjectionSpec.kronecker_terms) to time each energy layout at.",
)
_ADAM = flags.DEFINE_bool("adam", True, "Also time the adam correction.")
_TARGET = flags.DEFINE_float(
  "target_ratio", 0.9, "Trackstar tokens/s over the train step's to meet."
)

DEMO = model_lib.ModelConfig(
  vocab_size=2048, d_model=128, num_layers=4, num_heads=4, d_ff=512, max_len=64
)


def seconds_of(fn) -> float:
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


def analysis(compiled) -> dict[str, float]:
  """XLA's figures for a compiled program: FLOPs and its buffer plan."""
  stats = compiled.memory_analysis()
  return {
    "gflops": compiled.cost_analysis()["flops"] / 1e9,
    "temp_bytes": int(stats.temp_size_in_bytes),
    "argument_bytes": int(stats.argument_size_in_bytes),
  }


def random_batch(config, batch_size, seq_len, seed=0) -> data_lib.Batch:
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, config.vocab_size, (batch_size, seq_len)).astype(
    np.int32
  )
  mask = np.ones((batch_size, seq_len), np.float32)
  mask[:, 0] = 0
  return data_lib.Batch(ids, mask)


class _Loaded(NamedTuple):
  """The parts of a checkpoint `encoder.block_shares` reads."""

  params: Any
  opt_state: Any
  model_config: Any
  digest: str = "bench"


def make_encoder(
  kind, dim, config, state, adam_opt_state, mesh, *, allocation, batch, terms
):
  """An encoder of the trackstar preset with correction `kind` at `dim`;
  an "energy" layout is measured on `batch`."""
  opt_state = adam_opt_state if kind == "adam" else state.opt_state
  enc_config = encoder_lib.preset(
    "trackstar",
    correction=kind,
    projection=projection_lib.ProjectionSpec(
      dim=dim, allocation=allocation, kronecker_terms=terms
    ),
  )
  if enc_config.projection.needs_energy:
    loaded = _Loaded(state.params, opt_state, config)
    enc_config = encoder_lib.with_block_energy(
      enc_config, encoder_lib.block_shares(loaded, enc_config, [batch])
    )
  return encoder_lib.TrackStarEncoder(
    params=state.params,
    apply_fn=model_lib.apply_fn(config),
    config=enc_config,
    correction=correction_lib.from_checkpoint(
      enc_config.correction, opt_state, state.params
    ),
    checkpoint_digest="bench",
    mesh=mesh,
  )


def bench_width(width: int, mesh) -> dict:
  """The figures of one width multiplier."""
  config = dataclasses.replace(
    DEMO, d_model=DEMO.d_model * width, d_ff=DEMO.d_ff * width
  )
  opt = optimizer_lib.OptimizerConfig(name="adafactor", total_steps=100)
  batch = random_batch(config, _BATCH.value, _SEQ.value)
  tokens = float(batch.loss_mask.sum())
  step = train_lib.make_train_step(config, opt, mesh)
  holder = {"state": train_lib.init_state(config, opt, mesh, seed=0)}

  def train_once():
    holder["state"], loss = step(holder["state"], batch)
    loss.block_until_ready()

  train_analysis = analysis(step.lower(holder["state"], batch).compile())
  for _ in range(2):  # Compile, and give Adafactor's statistics values.
    train_once()
  # The step donates its state, so the encoders get a copy.
  state = jax.tree.map(lambda x: x.copy(), holder["state"])
  # Adam's nu: the statistics of a model trained with AdamW.
  adam_opt = dataclasses.replace(opt, name="adamw")
  adam_opt_state = train_lib.init_state(config, adam_opt, mesh, seed=0)
  adam_opt_state = adam_opt_state.opt_state
  # Today's layouts (energy) and the equal split they replaced, at the
  # first d.
  first = int(_DIMS.value[0])
  kinds = [
    ("adafactor", int(d), "energy", int(r))
    for d in _DIMS.value
    for r in _TERMS.value
  ]
  kinds.append(("adafactor", first, "equal", 1))
  if _ADAM.value:
    kinds.append(("adam", first, "energy", int(_TERMS.value[0])))
  encoders = {
    f"{kind}_d{dim}"
    + ("_equal" if allocation == "equal" else "")
    + (f"_r{terms}" if terms != 1 else ""): (
      make_encoder(
        kind,
        dim,
        config,
        state,
        adam_opt_state,
        mesh,
        allocation=allocation,
        batch=batch,
        terms=terms,
      )
    )
    for kind, dim, allocation, terms in kinds
  }
  fns = {"train": train_once}
  for name, enc in encoders.items():
    fns[name] = lambda e=enc: e.features(batch).features.block_until_ready()
  times = interleaved(fns, _REPEATS.value)
  train_seconds = statistics.median(times["train"])
  result = {
    "model": dataclasses.asdict(config),
    "num_params": sum(x.size for x in jax.tree.leaves(state.params)),
    "train_step": {
      "tokens_per_second": tokens / train_seconds,
      **train_analysis,
    },
    "encode": {},
  }
  for name, enc in encoders.items():
    ratios = [t / e for t, e in zip(times["train"], times[name], strict=True)]
    figures = analysis(enc.lower_features(batch).compile())
    result["encode"][name] = {
      "dim": enc.dim,
      "tokens_per_second": tokens / statistics.median(times[name]),
      "ratio_to_train_step": statistics.median(ratios),
      "ratio_min_max": [min(ratios), max(ratios)],
      "flops_ratio_to_train_step": train_analysis["gflops"] / figures["gflops"],
      **figures,
    }
  encode = result["encode"]
  trackstar = [
    v
    for k, v in encode.items()
    if k.startswith("adafactor") and not k.endswith("_equal")
  ]
  result["trackstar_meets_target"] = all(
    v["ratio_to_train_step"] >= _TARGET.value for v in trackstar
  )
  adam_key = f"adam_d{_DIMS.value[0]}"
  if adam_key in encode:
    same_dim = encode[f"adafactor_d{_DIMS.value[0]}"]
    for field in ("temp_bytes", "argument_bytes"):
      encode[adam_key][f"extra_{field}_over_trackstar"] = (
        encode[adam_key][field] - same_dim[field]
      )
  return result


def main(argv):
  del argv
  mesh = partitioning.make_mesh()
  results = {
    "batch_size": _BATCH.value,
    "seq_len": _SEQ.value,
    "devices": len(jax.devices()),
    "repeats": _REPEATS.value,
    "target_ratio": _TARGET.value,
    "widths": {},
  }
  for width in _WIDTHS.value:
    results["widths"][f"x{width}"] = bench_width(int(width), mesh)
  results["peak_rss_mb"] = (
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  )
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
