r"""Retrieves proponents for a query file and writes a browsable report.

  trak-jax-retrieve --queries=out/demo/data/queries.jsonl \
    --checkpoint=out/demo/model --corpus=out/demo/data/corpus.jsonl \
    --index=trackstar=out/demo/indexes/trackstar \
    --index=grad_dot=out/demo/indexes/grad_dot --output_dir=out/demo/report
"""

import json

from absl import app, flags, logging

from pipelines import launch, retrieve_lib

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
  summary = retrieve_lib.run_pipeline(launch.make_pipeline(), options=options)
  print(json.dumps(summary, indent=2))
  print(f"report: {options.output_dir}/report.html")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
