r"""Encodes a corpus into an encoding store (Beam; DirectRunner by default).

  trak-jax-encode --corpus=out/demo/data/corpus.jsonl \
    --checkpoint=out/demo/model --output_dir=out/demo/stores/adafactor \
    --gin_file=runs/encoder.gin \
    [--pipeline_options="--runner=DataflowRunner --project=..."]

With `--distributed` (or TRAK_JAX_DISTRIBUTED=1) every process of a
multi-host JAX job runs this binary: the processes join with
`jax.distributed.initialize()` and encode together on one global mesh, each
writing its own shards of the same store (pipelines/encode_distributed.py),
without Beam. On a TPU VM slice the coordinator is found by itself; elsewhere
pass --coordinator_address, --num_processes and --process_id.
"""

import json
import os

import gin
from absl import app, flags, logging

from pipelines import encode_lib, launch
from trak_jax import distributed, encoder, files, gin_utils

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
_MESH_MODEL = flags.DEFINE_integer(
  "mesh_model", 1, "Devices on the mesh's model axis (the rest: data)."
)
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  None,
  "Encode as one of several JAX processes (default: TRAK_JAX_DISTRIBUTED).",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (not on TPU VMs)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "Processes in the job (not on TPU VMs)."
)
_PROCESS_ID = flags.DEFINE_integer(
  "process_id", None, "This process's index (not on TPU VMs)."
)
_LENGTH_BUCKETS = flags.DEFINE_list(
  "length_buckets",
  ["16", "32", "48"],
  "Sequence lengths batches are padded to, besides the model's max_len "
  "(empty: always max_len).",
)
_ENERGY_QUERIES = flags.DEFINE_string(
  "energy_queries",
  None,
  "Query JSONL whose gradients share in measuring the projection layout "
  "(default: the corpus sample alone).",
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
  is_distributed = distributed.requested(_DISTRIBUTED.value)
  if is_distributed:
    distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  launch.parse_gin()
  options = encode_lib.EncodeOptions(
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
