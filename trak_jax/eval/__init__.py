"""Evaluation: fact-tracing benchmark, metrics and baselines."""

from trak_jax.eval.factbench import (
  Fact,
  FactBench,
  FactBenchConfig,
  FactQuery,
  Passage,
  generate,
  write_jsonl,
)

__all__ = [
  "Fact",
  "FactBench",
  "FactBenchConfig",
  "FactQuery",
  "Passage",
  "generate",
  "write_jsonl",
]
