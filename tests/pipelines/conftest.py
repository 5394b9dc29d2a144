"""A tiny trained model and fact corpus shared by the pipeline tests."""

import jax
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import encode_lib, hessian_lib
from trak_jax import encoder as encoder_lib
from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import projection as projection_lib
from trak_jax import train as train_lib
from trak_jax.eval import factbench

PIPELINE_MODEL = model_lib.ModelConfig(
  vocab_size=256, d_model=16, num_layers=2, num_heads=2, d_ff=32, max_len=64
)
# The encoder of the `trackstar_store` fixture.
STORE_CONFIG = encoder_lib.preset(
  "trackstar", projection=projection_lib.ProjectionSpec(dim=128)
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


@pytest.fixture(scope="session")
def trackstar_store(tiny_run, tmp_path_factory):
  """The tiny corpus encoded with STORE_CONFIG in 2 shards, and its Hessian.

  Returns:
    {"store": store directory, "hessian_dir": fitted Hessian directory
    (pathlib.Path both), "hessian": the Hessian job's info}. Tests only
    read them (copy to change).
  """
  root = tmp_path_factory.mktemp("trackstar_store")
  encode_lib.run_pipeline(
    TestPipeline(),
    options=encode_lib.EncodeOptions(
      corpus=tiny_run["corpus"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(root / "store"),
      encoder_config=STORE_CONFIG,
      num_shards=2,
      batch_size=16,
    ),
  )
  info = hessian_lib.run_pipeline(
    TestPipeline(),
    options=hessian_lib.HessianOptions(
      store_dir=str(root / "store"),
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(root / "hessian"),
      encoder_config=STORE_CONFIG,
      batch_size=16,
    ),
  )
  return {
    "store": root / "store",
    "hessian_dir": root / "hessian",
    "hessian": info,
  }
