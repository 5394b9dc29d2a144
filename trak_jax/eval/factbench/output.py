"""FactBench's files (corpus, queries, facts, config) and its counts."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Sequence

from trak_jax import files
from trak_jax.eval.factbench.config import bucket_label
from trak_jax.eval.factbench.records import Fact, FactBench, FactQuery


def _write_lines(path: str, records: Sequence[dict]) -> None:
  with files.open(path, "w", encoding="utf-8", newline="\n") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def write_jsonl(bench: FactBench, output_dir: str) -> dict[str, str]:
  """Writes corpus.jsonl, queries.jsonl, facts.jsonl and config.json.

  Args:
    bench: the output of `generate` (or any data set of the same shape:
      passages with id, text and fact_ids; dataclass facts and queries; a
      config with `to_json`, as `heldout_facts.generate` gives).
    output_dir: directory to write into; created if missing.

  Returns:
    The written paths by file name.
  """
  files.makedirs(output_dir)
  paths = {
    name: os.path.join(output_dir, name)
    for name in ("corpus.jsonl", "queries.jsonl", "facts.jsonl")
  }
  _write_lines(
    paths["corpus.jsonl"],
    [
      {"id": p.id, "text": p.text, "fact_ids": list(p.fact_ids)}
      for p in bench.passages
    ],
  )
  _write_lines(
    paths["queries.jsonl"],
    [_as_record(query) for query in bench.queries],
  )
  _write_lines(paths["facts.jsonl"], [_as_record(f) for f in bench.facts])
  paths["config.json"] = os.path.join(output_dir, "config.json")
  with files.open(paths["config.json"], "w", encoding="utf-8") as f:
    f.write(bench.config.to_json() + "\n")
  return paths


def _as_record(item: Fact | FactQuery) -> dict:
  record = dataclasses.asdict(item)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


def summary(bench: FactBench) -> dict:
  """Counts of passages, queries, and facts and queries per bucket."""
  labels = [bucket_label(b) for b in bench.config.buckets]
  facts = collections.Counter(f.frequency_bucket for f in bench.facts)
  queries = collections.Counter(q.frequency_bucket for q in bench.queries)
  return {
    "passages": len(bench.passages),
    "filler_passages": sum(not p.fact_ids for p in bench.passages),
    "facts": len(bench.facts),
    "queries": len(bench.queries),
    "facts_per_bucket": {label: facts[label] for label in labels},
    "queries_per_bucket": {label: queries[label] for label in labels},
  }
