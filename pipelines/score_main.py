r"""Scores a corpus against known queries while encoding it, with no store.

  trak-jax-score --corpus=out/data/corpus.jsonl \
    --queries=out/data/queries.jsonl --checkpoint=out/model \
    --hessian=out/hessian --output_dir=out/score \
    [--pipeline_options="--runner=DataflowRunner --project=..."]

Options from gin/runs/score.gin (how the corpus is encoded: runs/encode.gin;
the encoder: runs/encoder.gin, as the Hessian's), then --gin_file and
--gin_bindings.

Writes what trak-jax-retrieve writes for an exact index of the same
encodings (report.jsonl, metrics.json, report.html), then rejected.jsonl,
score.json and COMPLETED, last. The Hessian (`trak-jax-hessian` on a store
of a corpus sample) must have been fitted with the same encoder.
"""

import json

import gin
from absl import app, flags, logging

from pipelines import encode_lib, launch, score_lib
from trak_jax import gin_utils

_CORPUS = flags.DEFINE_string(
  "corpus",
  None,
  "JSONL/TFRecord file, glob, or tfds:/seqio: name.",
  required=True,
)
_QUERIES = flags.DEFINE_string("queries", None, "Query JSONL.", required=True)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Checkpoint.", required=True
)
_HESSIAN = flags.DEFINE_string(
  "hessian", None, "Fitted Hessian directory (trak-jax-hessian's output)."
)
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", None, "Receives the report.", required=True
)
_COMPILATION_CACHE_DIR = launch.define_compilation_cache_flag()


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  launch.parse_gin("score")
  options = gin.get_configurable(score_lib.ScoreOptions)(
    encode=gin.get_configurable(encode_lib.EncodeOptions)(
      corpus=_CORPUS.value,
      checkpoint=_CHECKPOINT.value,
      output_dir=_OUTPUT_DIR.value,
      compilation_cache_dir=_COMPILATION_CACHE_DIR.value or None,
    ),
    queries=_QUERIES.value,
    hessian_dir=_HESSIAN.value,
  )
  gin_utils.write_operative_config(options.output_dir)  # Before COMPLETED.
  info = score_lib.run_pipeline(launch.make_pipeline(), options=options)
  print(json.dumps(info["counts"], indent=2))
  print(f"report: {options.output_dir}/report.html")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
