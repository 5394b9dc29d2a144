"""Generates FactBench: knowledge base, passage plans, text, then queries."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence
from typing import Any

from trak_jax.eval.factbench import knowledge, planning, render
from trak_jax.eval.factbench.config import FactBenchConfig, bucket_of
from trak_jax.eval.factbench.records import (
  Fact,
  FactBench,
  FactQuery,
  Passage,
  RawFact,
  fact_id_at,
  passage_id_at,
)


def _make_facts(
  raw_facts: Sequence[RawFact],
  rendered: Sequence[tuple[str, tuple[int, ...]]],
  config: FactBenchConfig,
) -> list[Fact]:
  passage_ids = collections.defaultdict(list)
  for position, (_, plan) in enumerate(rendered):
    for i in plan:
      passage_ids[i].append(passage_id_at(position))
  return [
    Fact(
      fact_id=fact_id_at(i),
      subject=raw.subject,
      relation=raw.relation,
      object=raw.object,
      num_passages=len(passage_ids[i]),
      frequency_bucket=bucket_of(len(passage_ids[i]), config.buckets),
      passage_ids=tuple(passage_ids[i]),
    )
    for i, raw in enumerate(raw_facts)
  ]


def _make_queries(
  facts: Sequence[Fact], queried: set[int], rng: random.Random
) -> list[FactQuery]:
  order = sorted(queried)
  rng.shuffle(order)
  return [
    FactQuery(
      id=f"q{query_index:05d}",
      prompt=render.prompt(facts[i], rng),
      target=" " + facts[i].object,
      relevant_ids=facts[i].passage_ids,
      fact_id=facts[i].fact_id,
      relation=facts[i].relation,
      subject=facts[i].subject,
      object=facts[i].object,
      frequency_bucket=facts[i].frequency_bucket,
    )
    for query_index, i in enumerate(order)
  ]


def check_prompts_unseen(
  passages: Sequence[Any], queries: Sequence[Any]
) -> None:
  """Raises ValueError if a query prompt occurs verbatim in the corpus."""
  corpus = "\n".join(passage.text for passage in passages)
  for query in queries:
    if query.prompt in corpus:
      raise ValueError(f"Query prompt {query.prompt!r} occurs in the corpus.")


def generate(config: FactBenchConfig) -> FactBench:
  """Generates FactBench for `config`; the same config gives the same bench.

  Args:
    config: sizes, buckets and seed.

  Returns:
    The facts (all of them, with the passages stating each), the passages
    (in corpus order) and the queries.

  Raises:
    ValueError: if the config asks for more entities than exist, or a query
      prompt would occur in the corpus.
  """
  rng = random.Random(config.seed)
  raw_facts = knowledge.knowledge_base(config, rng)
  counts, queried = planning.draw_counts(config, len(raw_facts), rng)
  plans = planning.plan_passages(raw_facts, counts, queried, config, rng)
  rendered = render.render_passages(plans, raw_facts, config, rng)
  facts = _make_facts(raw_facts, rendered, config)
  passages = [
    Passage(
      id=passage_id_at(position),
      text=text,
      fact_ids=tuple(fact_id_at(i) for i in plan),
    )
    for position, (text, plan) in enumerate(rendered)
  ]
  queries = _make_queries(facts, queried, rng)
  check_prompts_unseen(passages, queries)
  return FactBench(facts, passages, queries, config)
