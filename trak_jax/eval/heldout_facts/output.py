"""The held-out facts' files, in FactBench's format, and their counts."""

from __future__ import annotations

import collections

from trak_jax.eval import factbench
from trak_jax.eval.heldout_facts.config import bucket_labels
from trak_jax.eval.heldout_facts.records import HeldoutFacts
from trak_jax.eval.heldout_facts.templates import RELATIONS


def write_jsonl(bench: HeldoutFacts, output_dir: str) -> dict[str, str]:
  """Writes corpus.jsonl, queries.jsonl, facts.jsonl and config.json, in
  FactBench's format (`factbench.write_jsonl` writes them).

  Args:
    bench: the output of `generate`.
    output_dir: directory to write into; created if missing.

  Returns:
    The written paths by file name.
  """
  return factbench.write_jsonl(bench, output_dir)


def summary(bench: HeldoutFacts) -> dict:
  """Counts of passages by kind, facts and queries by bucket and relation."""
  labels = bucket_labels(bench.config.buckets)
  kinds = collections.Counter(p.kind for p in bench.passages)
  facts = collections.Counter(f.mentions for f in bench.facts)
  queries = collections.Counter(q.mentions for q in bench.queries)
  relations = collections.Counter(q.relation for q in bench.queries)
  lengths = [len(p.text) for p in bench.passages]
  return {
    "passages": len(bench.passages),
    "fact_passages": kinds["fact"],
    "near_miss_passages": kinds["near_miss"],
    "filler_passages": kinds["filler"],
    "facts": len(bench.facts),
    "queries": len(bench.queries),
    "facts_per_bucket": {label: facts[label] for label in labels},
    "queries_per_bucket": {label: queries[label] for label in labels},
    "queries_per_relation": {r: relations[r] for r in RELATIONS},
    "mean_passage_chars": round(sum(lengths) / len(lengths), 1),
    "max_passage_chars": max(lengths),
  }
