r"""Retrieves proponents for a query file and writes a browsable report.

  trak-jax-retrieve --queries=out/demo/data/queries.jsonl \
    --checkpoint=out/demo/model --corpus=out/demo/data/corpus.jsonl \
    --index=trackstar=out/demo/indexes/trackstar \
    --index=grad_dot=out/demo/indexes/grad_dot --output_dir=out/demo/report

With `--distributed` (or TRAK_JAX_DISTRIBUTED=1) every process of a
multi-host JAX job runs this binary with `--search=mesh`: the sharded exact
indexes lie on one global mesh over all processes' devices and process 0
writes the report (pipelines/retrieve_distributed.py), without Beam.
Elsewhere than a TPU VM slice pass --coordinator_address, --num_processes
and --process_id.
"""

import json

from absl import app, flags, logging

from pipelines import launch, retrieve_lib
from trak_jax import distributed

_QUERIES = flags.DEFINE_string("queries", None, "Query JSONL.", required=True)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Checkpoint.", required=True
)
_CORPUS = flags.DEFINE_string("corpus", None, "Corpus spec.", required=True)
_INDEX = flags.DEFINE_multi_string(
  "index", [], "METHOD=INDEX_DIR, once per method (at least one)."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output.", required=True)
_K = flags.DEFINE_integer("k", 10, "Proponents per query and method.")
_SEARCH = flags.DEFINE_enum(
  "search",
  "beam",
  retrieve_lib.SEARCHES,
  "How sharded exact indexes are searched: beam (every index shard a work "
  "item, partial top-k merged per query) or mesh (loaded onto all devices "
  "of the worker that encodes the queries, searched as one SPMD program).",
)
_APPROX_RECALL_TARGET = flags.DEFINE_float(
  "approx_recall_target",
  None,
  "With --search=mesh: pick candidates with jax.lax.approx_max_k at this "
  "recall target, in (0, 1] (default: exact top-k). Recorded in "
  "metrics.json's search.",
)
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  None,
  "Retrieve as one of several JAX processes, with --search=mesh (default: "
  "TRAK_JAX_DISTRIBUTED).",
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
  is_distributed = distributed.requested(_DISTRIBUTED.value)
  if is_distributed:
    distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  launch.parse_gin()
  options = retrieve_lib.RetrieveOptions(
    queries=_QUERIES.value,
    checkpoint=_CHECKPOINT.value,
    corpus=_CORPUS.value,
    indexes=parse_indexes(_INDEX.value),
    output_dir=_OUTPUT_DIR.value,
    k=_K.value,
    search=_SEARCH.value,
    approx_recall_target=_APPROX_RECALL_TARGET.value,
  )
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
