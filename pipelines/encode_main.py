r"""Encodes a corpus into an encoding store (Beam; DirectRunner by default).

Options from gin/runs/encode.gin (the encoder: runs/encoder.gin), then
--gin_file and --gin_bindings:

  trak-jax-encode --corpus=out/demo/data/corpus.jsonl \
    --checkpoint=out/demo/model --output_dir=out/demo/stores/adafactor \
    [--gin_bindings="encode_lib.EncodeOptions.num_shards = 16"] \
    [--pipeline_options="--runner=DataflowRunner --project=..."]

With `--distributed` (or TRAK_JAX_DISTRIBUTED=1) every process of a
multi-host JAX job runs this binary: the processes join with
`jax.distributed.initialize()` and encode together on one global mesh, each
writing its own shards of the same store (pipelines/encode_distributed.py),
without Beam. On a TPU VM slice the coordinator is found by itself; elsewhere
pass --coordinator_address, --num_processes and --process_id.
"""

import json

import gin
from absl import app, flags, logging

from pipelines import encode_lib, launch
from trak_jax import files, gin_utils

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
_DISTRIBUTED = launch.DistributedFlags.define("Encode")
_ENERGY_QUERIES = flags.DEFINE_string(
  "energy_queries",
  None,
  "Query JSONL whose gradients share in measuring the projection layout "
  "(default: the corpus sample alone).",
)
_COMPILATION_CACHE_DIR = launch.define_compilation_cache_flag()


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  is_distributed = _DISTRIBUTED.join()
  launch.parse_gin("encode")
  options = gin.get_configurable(encode_lib.EncodeOptions)(
    corpus=_CORPUS.value,
    checkpoint=_CHECKPOINT.value,
    output_dir=_OUTPUT_DIR.value,
    compilation_cache_dir=_COMPILATION_CACHE_DIR.value or None,
    energy_queries=_ENERGY_QUERIES.value,
  )
  if is_distributed:
    from pipelines import encode_distributed

    result = encode_distributed.run(options)
    manifest = result.pop("manifest", None)
    print(json.dumps({"counters": result}, indent=2))
    if manifest is None:
      return  # Process 0 completes the store and writes its config.
  else:
    result = encode_lib.run_pipeline(launch.make_pipeline(), options=options)
    print(
      json.dumps(
        {
          "counters": encode_lib.counters(result),
          "distributions": encode_lib.distributions(result),
        },
        indent=2,
      )
    )
  gin_utils.write_operative_config(options.output_dir)
  with files.open(f"{options.output_dir}/manifest.json") as f:
    print(json.dumps(json.load(f)["counts"], indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
