"""Small corpora, configs and runs shared by the tests."""

import json
import os
import random

from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import train as train_lib

WORDS = (
  "the a capital city of Norway France Oslo Paris is was born in works for "
  "studied at river mountain lake old new small large north south"
).split()

TINY_MODEL = model_lib.ModelConfig(
  vocab_size=64, d_model=16, num_layers=2, num_heads=2, d_ff=32, max_len=32
)


def write_corpus(path: str, *, num_examples: int = 64, seed: int = 0) -> str:
  """Writes a random-word JSONL corpus; returns its path."""
  rng = random.Random(seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for i in range(num_examples):
      words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
      f.write(json.dumps({"id": f"p{i:04d}", "text": " ".join(words)}) + "\n")
  return path


def tiny_optimizer(name: str = "adafactor") -> optimizer_lib.OptimizerConfig:
  return optimizer_lib.OptimizerConfig(
    name=name,
    learning_rate=1e-2,
    warmup_steps=2,
    total_steps=20,
    min_dim_size_to_factor=8,
  )


def tiny_train_config(**overrides) -> train_lib.TrainConfig:
  values = dict(
    num_steps=6, batch_size=8, seq_len=32, checkpoint_every=100, log_every=2
  )
  values.update(overrides)
  return train_lib.TrainConfig(**values)


def trained_state(
  optimizer: str = "adafactor",
  *,
  mesh=None,
  steps: int = 3,
  model_config: model_lib.ModelConfig = TINY_MODEL,
):
  """A tiny model after a few steps on random tokens: (state, batches)."""
  import jax

  from trak_jax import partitioning

  mesh = mesh or partitioning.make_mesh(devices=jax.devices()[:1])
  optimizer_config = tiny_optimizer(optimizer)
  state = train_lib.init_state(model_config, optimizer_config, mesh, seed=0)
  step_fn = train_lib.make_train_step(model_config, optimizer_config, mesh)
  for step in range(steps):
    state, _ = step_fn(
      state, random_batch(seed=step, model_config=model_config)
    )
  return state


def random_batch(
  *,
  seed: int = 0,
  batch_size: int = 8,
  seq_len: int = 24,
  model_config: model_lib.ModelConfig = TINY_MODEL,
  lengths=None,
):
  """Random token sequences of random lengths, right-padded."""
  import numpy as np

  from trak_jax import data as data_lib

  rng = np.random.default_rng(seed)
  if lengths is None:
    lengths = rng.integers(seq_len // 2, seq_len + 1, batch_size)
  sequences = []
  for length in lengths:
    ids = rng.integers(4, model_config.vocab_size, length).astype(np.int32)
    mask = np.ones(length, np.float32)
    mask[0] = 0
    sequences.append((ids, mask))
  return data_lib.pad_batch(sequences, seq_len=seq_len)


def assert_trees_close(actual, expected, *, rtol: float = 1e-5) -> None:
  """Two pytrees of training state agree up to float32 reduction order.

  Two runs of the same training steps on CPU threads are not promised to be
  bit-identical (XLA may order a reduction differently in another
  compilation or with another thread count): each float leaf must be within
  `rtol` of its own largest magnitude, which a wrong step, batch or
  optimizer state misses by far; integer leaves (the step) must be equal.
  """
  import jax
  import numpy as np

  assert jax.tree.structure(actual) == jax.tree.structure(expected)

  def check(a, e):
    a, e = np.asarray(a), np.asarray(e)
    assert a.shape == e.shape and a.dtype == e.dtype
    if not np.issubdtype(e.dtype, np.floating):
      np.testing.assert_array_equal(a, e)
      return
    scale = float(np.abs(e).max()) if e.size else 0.0
    np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)

  jax.tree.map(check, actual, expected)
