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
