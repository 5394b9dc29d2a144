r"""Encoder throughput next to a plain training step, in one process.

  python bench/encode_throughput.py [--width_multiplier=4] [--repeats=5]

Prints one JSON object: tokens/s of the jitted train step (forward,
backward, update) and of corpus-side encoding with the trackstar preset
(Adafactor correction, Kronecker projection) at d = 2^12 and 2^16, and with
the `adam` correction (which materialises per-layer gradients), for the demo
model (or a model `width_multiplier` times wider) at the same batch and
sequence length; medians of `repeats` timed runs after a warm-up, their
ratios, and the process's peak resident memory.
"""

import dataclasses
import json
import resource
import statistics
import time

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

_WIDTH = flags.DEFINE_integer("width_multiplier", 1, "d_model and d_ff x.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples per step.")
_SEQ = flags.DEFINE_integer("seq_len", 64, "Tokens per example.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement.")
_DIMS = flags.DEFINE_list("dims", ["4096", "65536"], "Projection dims.")
_ADAM = flags.DEFINE_bool("adam", True, "Also time the adam correction.")

DEMO = model_lib.ModelConfig(
  vocab_size=2048, d_model=128, num_layers=4, num_heads=4, d_ff=512, max_len=64
)


def timed(fn, repeats: int) -> float:
  """Median seconds of `fn()` (which blocks) over `repeats` runs."""
  fn()  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def random_batch(config, batch_size, seq_len, seed=0) -> data_lib.Batch:
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, config.vocab_size, (batch_size, seq_len)).astype(
    np.int32
  )
  mask = np.ones((batch_size, seq_len), np.float32)
  mask[:, 0] = 0
  return data_lib.Batch(ids, mask)


def main(argv):
  del argv
  width = _WIDTH.value
  config = dataclasses.replace(
    DEMO, d_model=DEMO.d_model * width, d_ff=DEMO.d_ff * width
  )
  opt = optimizer_lib.OptimizerConfig(name="adafactor", total_steps=100)
  mesh = partitioning.make_mesh()
  batch = random_batch(config, _BATCH.value, _SEQ.value)
  tokens = float(batch.loss_mask.sum())
  state = train_lib.init_state(config, opt, mesh, seed=0)
  step = train_lib.make_train_step(config, opt, mesh)
  holder = {"state": state}

  def train_once():
    holder["state"], loss = step(holder["state"], batch)
    loss.block_until_ready()

  train_seconds = timed(train_once, _REPEATS.value)
  state = holder["state"]
  results = {
    "model": dataclasses.asdict(config),
    "batch_size": _BATCH.value,
    "seq_len": _SEQ.value,
    "devices": len(jax.devices()),
    "train_step_tokens_per_second": tokens / train_seconds,
    "encode": {},
  }
  kinds = [("adafactor", int(d)) for d in _DIMS.value]
  if _ADAM.value:
    kinds.append(("adam", int(_DIMS.value[0])))
  for kind, dim in kinds:
    if kind == "adam":  # Adam's nu: a model trained with AdamW.
      adam_opt = dataclasses.replace(opt, name="adamw")
      adam_state = train_lib.init_state(config, adam_opt, mesh, seed=0)
      opt_state = adam_state.opt_state
    else:
      opt_state = state.opt_state
    enc_config = encoder_lib.preset(
      "trackstar",
      correction=kind,
      projection=projection_lib.ProjectionSpec(dim=dim),
    )
    encoder = encoder_lib.TrackStarEncoder(
      params=state.params,
      model_config=config,
      config=enc_config,
      correction=correction_lib.from_checkpoint(
        enc_config.correction, opt_state, state.params
      ),
      checkpoint_digest="bench",
      mesh=mesh,
    )
    seconds = timed(
      lambda e=encoder: e.features(batch).features.block_until_ready(),
      _REPEATS.value,
    )
    results["encode"][f"{kind}_d{dim}"] = {
      "tokens_per_second": tokens / seconds,
      "ratio_to_train_step": train_seconds / seconds,
      "dim": encoder.dim,
    }
  results["peak_rss_mb"] = (
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  )
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
