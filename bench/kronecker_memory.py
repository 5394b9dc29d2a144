r"""Per-example memory of the Kronecker path does not grow with m x n.

  python bench/kronecker_memory.py [--width_multipliers=1,2,4] [--batch_size=8]

What is measured. For each width multiplier w (d_model and d_ff of a small
transformer times w; vocabulary and sequence length fixed), a program is
compiled for batches of B and 2B examples, and XLA's buffer plan of each
compiled program is read with
`jax.jit(...).lower(...).compile().memory_analysis()`. Its
`temp_size_in_bytes` is the scratch memory the program allocates besides
its arguments and outputs: activations kept for the backward pass, the
per-token factors, and whatever gradient is formed. Nothing is run, so the
figures do not depend on load. Per-example bytes are

    (temp(2B) - temp(B)) / B

which cancels what does not grow with the batch (buffers the size of the
parameters, the projection matrices). Three programs are compared:

- train_step: the jitted training step (forward, backward, Adafactor
  update), whose per-example memory is its activations;
- trackstar: the encoder's `features` with Adafactor-factored correction
  and Kronecker projection, which projects per-token factors,
  Σ_t (P_L a_t)(P_R δ_t)ᵀ, and never forms an m x n gradient per example.
  What it keeps per example are activations and factors of size
  tokens x (m + n) per matrix;
- materialised: `features` with Adam's elementwise correction, which forms
  each matrix's per-example gradient ∇W (m x n). Its `chunk_size` is set to
  the batch size here, so that every example of the batch is materialised
  at once and the difference above shows the per-example cost; with the
  default chunk of 8 examples that cost stops growing at 8 examples.

Printed next to them, per width: m x n x 4 bytes of one per-example float32
gradient of the widest matrix (a feed-forward kernel, d_model x d_ff) and of
all matrices together, and tokens x Σ(m + n) x 4 bytes, the per-token factors
of every matrix of one example; and each figure's growth over the narrowest
width. The claim holds if trackstar's per-example bytes grow like the
factors and the train step's (linearly in the width), not like m x n
(quadratically). The vocabulary is small (256) so that the [tokens, vocab]
logits, the same at every width, do not hide that growth.
"""

import dataclasses
import json
import math
import time

import numpy as np
from absl import app, flags

from trak_jax import capture, partitioning
from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import projection as projection_lib
from trak_jax import train as train_lib

_WIDTHS = flags.DEFINE_list(
  "width_multipliers", ["1", "2", "4"], "d_model and d_ff x each of these."
)
_BATCH = flags.DEFINE_integer("batch_size", 8, "B; also compiled at 2B.")
_SEQ = flags.DEFINE_integer("seq_len", 64, "Tokens per example.")
_DIM = flags.DEFINE_integer("dim", 4096, "Projection dim d.")

BASE = model_lib.ModelConfig(
  vocab_size=256, d_model=128, num_layers=2, num_heads=4, d_ff=512, max_len=64
)


def batch_of(config, batch_size: int, seq_len: int) -> data_lib.Batch:
  ids = np.full((batch_size, seq_len), 4, np.int32)
  mask = np.ones((batch_size, seq_len), np.float32)
  return data_lib.Batch(ids, mask)


def temp_bytes(encoder, batch) -> int:
  stats = encoder.lower_features(batch).compile().memory_analysis()
  return int(stats.temp_size_in_bytes)


def make_encoder(kind, config, params, opt_state, mesh, *, chunk_size):
  enc_config = dataclasses.replace(
    encoder_lib.preset(
      "trackstar",
      correction=kind,
      projection=projection_lib.ProjectionSpec(
        dim=_DIM.value, allocation="equal"
      ),
    ),
    chunk_size=chunk_size,
  )
  return encoder_lib.TrackStarEncoder(
    params=params,
    apply_fn=model_lib.apply_fn(config),
    config=enc_config,
    correction=correction_lib.from_checkpoint(
      enc_config.correction, opt_state, params
    ),
    checkpoint_digest="bench",
    mesh=mesh,
  )


def per_example(kind, config, params, opt_state, mesh) -> dict:
  """temp bytes at B and 2B, and their difference per example."""
  small, large = _BATCH.value, 2 * _BATCH.value
  temps = {}
  for size in (small, large):
    # chunk_size = batch: the materialised path forms every example at once.
    encoder = make_encoder(
      kind, config, params, opt_state, mesh, chunk_size=size
    )
    temps[size] = temp_bytes(encoder, batch_of(config, size, _SEQ.value))
  return {
    f"temp_bytes_b{small}": temps[small],
    f"temp_bytes_b{large}": temps[large],
    "per_example_bytes": (temps[large] - temps[small]) / small,
  }


def train_step_per_example(config, state, mesh) -> dict:
  """The same figures for the training step (forward, backward, update)."""
  opt = optimizer_lib.OptimizerConfig(name="adafactor", total_steps=10)
  step = train_lib.make_train_step(config, opt, mesh)
  small, large = _BATCH.value, 2 * _BATCH.value
  temps = {
    size: int(
      step.lower(state, batch_of(config, size, _SEQ.value))
      .compile()
      .memory_analysis()
      .temp_size_in_bytes
    )
    for size in (small, large)
  }
  return {
    f"temp_bytes_b{small}": temps[small],
    f"temp_bytes_b{large}": temps[large],
    "per_example_bytes": (temps[large] - temps[small]) / small,
  }


def measure_width(width: int, mesh) -> dict:
  config = dataclasses.replace(
    BASE, d_model=BASE.d_model * width, d_ff=BASE.d_ff * width
  )
  states = {
    kind: train_lib.init_state(
      config,
      optimizer_lib.OptimizerConfig(name=optimizer, total_steps=10),
      mesh,
      seed=0,
    )
    for kind, optimizer in (("adafactor", "adafactor"), ("adam", "adamw"))
  }
  params = states["adafactor"].params
  views = capture.matrix_views(model_lib.apply_fn(config), params)
  shapes = list(views.values())
  widest = max(shapes, key=math.prod)
  trackstar = per_example(
    "adafactor", config, params, states["adafactor"].opt_state, mesh
  )
  materialised = per_example(
    "adam", config, params, states["adam"].opt_state, mesh
  )
  return {
    "d_model": config.d_model,
    "d_ff": config.d_ff,
    "widest_matrix": list(widest),
    "widest_gradient_bytes": math.prod(widest) * 4,
    "all_matrix_gradient_bytes": sum(math.prod(s) for s in shapes) * 4,
    "factor_bytes": _SEQ.value * sum(m + n for m, n in shapes) * 4,
    "train_step": train_step_per_example(config, states["adafactor"], mesh),
    "trackstar": trackstar,
    "materialised": materialised,
  }


def growth(widths: dict, key) -> list[float]:
  """`key(width figures)` of each width over that of the first."""
  values = [key(v) for v in widths.values()]
  return [v / values[0] for v in values]


def main(argv):
  del argv
  start = time.perf_counter()
  mesh = partitioning.make_mesh()
  widths = {f"x{w}": measure_width(int(w), mesh) for w in _WIDTHS.value}
  results = {
    "model": dataclasses.asdict(BASE),
    "batch_sizes": [_BATCH.value, 2 * _BATCH.value],
    "seq_len": _SEQ.value,
    "dim": _DIM.value,
    "widths": widths,
    "growth_over_narrowest": {
      "widest_gradient_bytes": growth(
        widths, lambda v: v["widest_gradient_bytes"]
      ),
      "all_matrix_gradient_bytes": growth(
        widths, lambda v: v["all_matrix_gradient_bytes"]
      ),
      "factor_bytes": growth(widths, lambda v: v["factor_bytes"]),
      "train_step_per_example_bytes": growth(
        widths, lambda v: v["train_step"]["per_example_bytes"]
      ),
      "trackstar_per_example_bytes": growth(
        widths, lambda v: v["trackstar"]["per_example_bytes"]
      ),
      "materialised_per_example_bytes": growth(
        widths, lambda v: v["materialised"]["per_example_bytes"]
      ),
    },
    "per_example_bytes_over_widest_gradient": {
      path: [
        v[path]["per_example_bytes"] / v["widest_gradient_bytes"]
        for v in widths.values()
      ]
      for path in ("train_step", "trackstar", "materialised")
    },
    "seconds": time.perf_counter() - start,
  }
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
