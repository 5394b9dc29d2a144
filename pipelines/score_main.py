r"""Scores a corpus against known queries while encoding it, with no store.

  trak-jax-score --corpus=out/data/corpus.jsonl \
    --queries=out/data/queries.jsonl --checkpoint=out/model \
    --hessian=out/hessian --output_dir=out/score \
    --gin_file=runs/encoder.gin \
    [--pipeline_options="--runner=DataflowRunner --project=..."]

Writes what trak-jax-retrieve writes for an exact index of the same
encodings (report.jsonl, metrics.json, report.html), then rejected.jsonl,
score.json and COMPLETED, last. The Hessian (`trak-jax-hessian` on a store
of a corpus sample) must have been fitted with the same encoder.
"""

import json
import os

import gin
from absl import app, flags, logging

from pipelines import encode_lib, launch, score_lib
from trak_jax import encoder, gin_utils

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
_METHOD = flags.DEFINE_string("method", "trackstar", "The report's method.")
_K = flags.DEFINE_integer("k", 10, "Proponents per query.")
_NUM_SHARDS = flags.DEFINE_integer(
  "num_shards", 4, "Work items the corpus is split into (by id)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per call.")
_QUERY_BATCH_SIZE = flags.DEFINE_integer(
  "query_batch_size", 32, "Queries per call."
)
_TRUNCATE = flags.DEFINE_bool(
  "truncate", True, "Truncate long examples (else reject them)."
)
_MESH_MODEL = flags.DEFINE_integer(
  "mesh_model", 1, "Devices on the mesh's model axis (the rest: data)."
)
_LENGTH_BUCKETS = flags.DEFINE_list(
  "length_buckets",
  ["16", "32", "48"],
  "Sequence lengths batches are padded to, besides the model's max_len "
  "(empty: always max_len).",
)
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
  "compilation_cache_dir",
  os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
    "trak_jax",
    "jax_compilation_cache",
  ),
  "JAX's persistent compilation cache (empty: none).",
)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  launch.parse_gin()
  options = score_lib.ScoreOptions(
    encode=encode_lib.EncodeOptions(
      corpus=_CORPUS.value,
      checkpoint=_CHECKPOINT.value,
      output_dir=_OUTPUT_DIR.value,
      encoder_config=gin.get_configurable(encoder.preset)(),
      num_shards=_NUM_SHARDS.value,
      batch_size=_BATCH_SIZE.value,
      truncate=_TRUNCATE.value,
      mesh_model=_MESH_MODEL.value,
      length_buckets=tuple(int(n) for n in _LENGTH_BUCKETS.value),
      compilation_cache_dir=_COMPILATION_CACHE_DIR.value or None,
    ),
    queries=_QUERIES.value,
    hessian_dir=_HESSIAN.value,
    method=_METHOD.value,
    k=_K.value,
    query_batch_size=_QUERY_BATCH_SIZE.value,
  )
  gin_utils.write_operative_config(options.output_dir)  # Before COMPLETED.
  info = score_lib.run_pipeline(launch.make_pipeline(), options=options)
  print(json.dumps(info["counts"], indent=2))
  print(f"report: {options.output_dir}/report.html")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
