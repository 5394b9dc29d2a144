"""A tiny trained model and fact corpus shared by the pipeline tests."""

import jax
import pytest

from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import train as train_lib
from trak_jax.eval import factbench

PIPELINE_MODEL = model_lib.ModelConfig(
  vocab_size=256, d_model=16, num_layers=2, num_heads=2, d_ff=32, max_len=64
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """{"corpus", "queries", "checkpoint"} paths of a tiny trained model."""
  root = tmp_path_factory.mktemp("tiny_run")
  bench = factbench.generate(factbench.FactBenchConfig.tiny())
  paths = factbench.write_jsonl(bench, str(root / "data"))
  result = train_lib.train(
    corpus_path=str(root / "data" / "corpus.jsonl"),
    output_dir=str(root / "model"),
    model_config=PIPELINE_MODEL,
    optimizer_config=optimizer_lib.OptimizerConfig(
      name="adafactor",
      learning_rate=1e-2,
      warmup_steps=5,
      total_steps=30,
      min_dim_size_to_factor=8,
    ),
    train_config=train_lib.TrainConfig(
      num_steps=30, batch_size=16, seq_len=64, checkpoint_every=30, log_every=10
    ),
    devices=jax.devices()[:1],
  )
  return {
    "root": root,
    "corpus": str(root / "data" / "corpus.jsonl"),
    "queries": str(root / "data" / "queries.jsonl"),
    "checkpoint": result.output_dir,
    "paths": paths,
  }
