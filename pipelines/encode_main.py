r"""Encodes a corpus into an encoding store (Beam; DirectRunner by default).

  trak-jax-encode --corpus=out/demo/data/corpus.jsonl \
    --checkpoint=out/demo/model --output_dir=out/demo/stores/adafactor \
    --gin_file=runs/encoder.gin \
    [--pipeline_options="--runner=DataflowRunner --project=..."]
"""

import json
import os

import gin
from absl import app, flags, logging

from pipelines import encode_lib, launch
from trak_jax import encoder, gin_utils

_CORPUS = flags.DEFINE_string(
  "corpus",
  None,
  "JSONL/TFRecord file, glob, or tfds:/seqio: name.",
  required=True,
)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Checkpoint.", required=True
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Store.", required=True)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 4, "Output shards.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per call.")
_TRUNCATE = flags.DEFINE_bool(
  "truncate", True, "Truncate long examples (else reject them)."
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
  options = encode_lib.EncodeOptions(
    corpus=_CORPUS.value,
    checkpoint=_CHECKPOINT.value,
    output_dir=_OUTPUT_DIR.value,
    encoder_config=gin.get_configurable(encoder.preset)(),
    num_shards=_NUM_SHARDS.value,
    batch_size=_BATCH_SIZE.value,
    truncate=_TRUNCATE.value,
    length_buckets=tuple(int(n) for n in _LENGTH_BUCKETS.value),
    compilation_cache_dir=_COMPILATION_CACHE_DIR.value or None,
  )
  result = encode_lib.run_pipeline(launch.make_pipeline(), options=options)
  gin_utils.write_operative_config(options.output_dir)
  print(
    json.dumps(
      {
        "counters": encode_lib.counters(result),
        "distributions": encode_lib.distributions(result),
      },
      indent=2,
    )
  )
  with open(f"{options.output_dir}/manifest.json") as f:
    print(json.dumps(json.load(f)["counts"], indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
