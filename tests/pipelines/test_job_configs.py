"""Every job's options come from its gin/runs/<job>.gin, defaults unchanged."""

import os

import gin
import pytest
from absl import flags

from pipelines import (
  encode_lib,
  evaluate_lib,
  evaluate_main,
  hessian_lib,
  index_lib,
  launch,
  retrieve_lib,
  score_lib,
)
from trak_jax import encoder, gin_utils

JOBS = ("encode", "hessian", "index", "retrieve", "score", "eval", "demo")
PATHS = {
  encode_lib.EncodeOptions: dict(corpus="c", checkpoint="k", output_dir="o"),
  hessian_lib.HessianOptions: dict(
    store_dir="s", queries="q", checkpoint="k", output_dir="o"
  ),
  index_lib.IndexOptions: dict(store_dir="s", hessian_dir=None, output_dir="o"),
  retrieve_lib.RetrieveOptions: dict(
    queries="q",
    checkpoint="k",
    corpus="c",
    indexes=(("m", "i"),),
    output_dir="o",
  ),
  evaluate_lib.EvaluateOptions: dict(
    corpus="c", queries="q", checkpoint="k", output_dir="o"
  ),
}


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def parse(job: str, bindings=()) -> None:
  gin_utils.parse([launch.job_gin_file(job)], bindings)


def from_gin(cls, **extra):
  return gin.get_configurable(cls)(**PATHS[cls], **extra)


def library_encoder() -> encoder.EncoderConfig:
  return encoder.preset("trackstar")


@pytest.mark.parametrize("job", JOBS)
def test_every_job_file_opens_with_what_to_set_and_override(job):
  path = os.path.join(gin_utils.GIN_DIR, launch.job_gin_file(job))
  with open(path) as f:
    head = f.read().split("from __gin__")[0]
  assert "Must be set" in head or "Nothing must be set" in head
  assert "Commonly overridden" in head


@pytest.mark.parametrize(
  "job, cls",
  [
    ("encode", encode_lib.EncodeOptions),
    ("hessian", hessian_lib.HessianOptions),
    ("index", index_lib.IndexOptions),
  ],
)
def test_job_defaults_are_the_library_defaults(job, cls):
  parse(job)
  assert from_gin(cls) == cls(**PATHS[cls], encoder_config=library_encoder())


def test_retrieve_and_eval_defaults_are_the_library_defaults():
  parse("retrieve")
  cls = retrieve_lib.RetrieveOptions
  assert from_gin(cls) == cls(**PATHS[cls])
  gin.clear_config()
  parse("eval")
  cls = evaluate_lib.EvaluateOptions
  assert from_gin(cls) == cls(**PATHS[cls])


def test_score_takes_its_encoding_from_the_encode_file():
  parse("score", ["encode_lib.EncodeOptions.num_shards = 9"])
  encode = from_gin(encode_lib.EncodeOptions)
  options = gin.get_configurable(score_lib.ScoreOptions)(
    encode=encode, queries="q", hessian_dir=None
  )
  assert options == score_lib.ScoreOptions(
    encode=encode_lib.EncodeOptions(
      **PATHS[encode_lib.EncodeOptions],
      encoder_config=library_encoder(),
      num_shards=9,
    ),
    queries="q",
    hessian_dir=None,
  )


def test_the_demo_is_the_evaluation_with_80_tail_patched_queries():
  parse("demo")
  cls = evaluate_lib.EvaluateOptions
  assert from_gin(cls) == cls(**PATHS[cls], tailpatch_queries=80)


def test_bindings_reach_the_options_and_bad_values_are_named():
  parse(
    "index",
    [
      "index_lib.IndexOptions.kind = 'exact'",
      "index_lib.IndexOptions.dtype = 'int8'",
      "projection.ProjectionSpec.dim = 512",
    ],
  )
  options = from_gin(index_lib.IndexOptions)
  assert (options.kind, options.dtype) == ("exact", "int8")
  assert options.encoder_config.projection.dim == 512
  gin.clear_config()
  parse("retrieve", ["retrieve_lib.RetrieveOptions.approx_recall_target = 0.9"])
  with pytest.raises(ValueError, match="needs search='mesh'"):
    from_gin(retrieve_lib.RetrieveOptions)


def test_eval_binary_builds_its_options_from_gin_and_records_them(
  tmp_path, monkeypatch
):
  seen = []

  def fake_evaluate(options, *, make_pipeline):
    del make_pipeline
    seen.append(options)
    return {"meta": {"seconds": 0.0}}

  monkeypatch.setattr(evaluate_lib, "evaluate", fake_evaluate)
  output_dir = str(tmp_path / "eval")
  flags.FLAGS.unparse_flags()
  flags.FLAGS(
    [
      "trak-jax-eval",
      "--corpus=c.jsonl",
      "--queries=q.jsonl",
      "--checkpoint=model",
      f"--output_dir={output_dir}",
      "--gin_bindings=evaluate_lib.EvaluateOptions.tailpatch_queries = 7",
      "--gin_bindings=projection.ProjectionSpec.dim = 256",
    ]
  )
  try:
    evaluate_main.main([])
  finally:
    flags.FLAGS.unparse_flags()
  (options,) = seen
  assert (options.checkpoint, options.tailpatch_queries) == ("model", 7)
  assert options.projection.dim == 256
  with open(os.path.join(output_dir, gin_utils.OPERATIVE_CONFIG)) as f:
    config = f.read()
  assert "evaluate_lib.EvaluateOptions.tailpatch_queries = 7" in config
  assert "projection.ProjectionSpec.dim = 256" in config
