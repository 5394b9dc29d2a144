r"""Retrieves proponents for a query file and writes a browsable report.

  trak-jax-retrieve --queries=out/demo/data/queries.jsonl \
    --checkpoint=out/demo/model --corpus=out/demo/data/corpus.jsonl \
    --index=trackstar=out/demo/indexes/trackstar \
    --index=grad_dot=out/demo/indexes/grad_dot --output_dir=out/demo/report

Options (k, search, ...) from gin/runs/retrieve.gin, then --gin_file and
--gin_bindings; config.gin records them next to the report.

With `--distributed` (or TRAK_JAX_DISTRIBUTED=1) every process of a
multi-host JAX job runs this binary with
`--gin_bindings="retrieve_lib.RetrieveOptions.search = 'mesh'"`: the sharded
exact indexes lie on one global mesh over all processes' devices and process 0
writes the report (pipelines/retrieve_distributed.py), without Beam.
Elsewhere than a TPU VM slice pass --coordinator_address, --num_processes
and --process_id.
"""

import json

import gin
import jax
from absl import app, flags, logging

from pipelines import launch, retrieve_lib
from trak_jax import gin_utils

_QUERIES = flags.DEFINE_string("queries", None, "Query JSONL.", required=True)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Checkpoint.", required=True
)
_CORPUS = flags.DEFINE_string("corpus", None, "Corpus spec.", required=True)
_INDEX = flags.DEFINE_multi_string(
  "index", [], "METHOD=INDEX_DIR, once per method (at least one)."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output.", required=True)
_DISTRIBUTED = launch.DistributedFlags.define(
  "Retrieve, with RetrieveOptions.search = 'mesh',"
)


def parse_indexes(values: list[str]) -> tuple[tuple[str, str], ...]:
  """METHOD=DIR pairs.

  Raises:
    app.UsageError: On a value without '='.
  """
  if not values:
    raise app.UsageError("give at least one --index=METHOD=INDEX_DIR")
  pairs = []
  for value in values:
    name, sep, directory = value.partition("=")
    if not sep or not name or not directory:
      raise app.UsageError(f"--index={value!r} is not METHOD=INDEX_DIR")
    pairs.append((name, directory))
  return tuple(pairs)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  is_distributed = _DISTRIBUTED.join()
  launch.parse_gin("retrieve")
  options = gin.get_configurable(retrieve_lib.RetrieveOptions)(
    queries=_QUERIES.value,
    checkpoint=_CHECKPOINT.value,
    corpus=_CORPUS.value,
    indexes=parse_indexes(_INDEX.value),
    output_dir=_OUTPUT_DIR.value,
  )
  if not is_distributed or jax.process_index() == 0:
    gin_utils.write_operative_config(options.output_dir)
  if is_distributed:
    from pipelines import retrieve_distributed

    summary = retrieve_distributed.run(options)
    if summary is None:
      return  # Process 0 writes the report.
  else:
    summary = retrieve_lib.run_pipeline(launch.make_pipeline(), options=options)
  print(json.dumps(summary, indent=2))
  print(f"report: {options.output_dir}/report.html")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
