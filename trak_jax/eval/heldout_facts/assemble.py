"""Generates the held-out facts: the world, the corpus, then queries."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

from trak_jax.eval import factbench
from trak_jax.eval.factbench.records import fact_id_at
from trak_jax.eval.heldout_facts import corpus, world
from trak_jax.eval.heldout_facts.config import HeldoutFactsConfig, bucket_of
from trak_jax.eval.heldout_facts.records import (
  Fact,
  FactQuery,
  HeldoutFacts,
  Passage,
  RawFact,
)
from trak_jax.eval.heldout_facts.templates import QUERY_TEMPLATES


def _make_facts(
  raw_facts: Sequence[RawFact],
  passages: Sequence[Passage],
  config: HeldoutFactsConfig,
) -> list[Fact]:
  passage_ids = collections.defaultdict(list)
  for passage in passages:
    for fact_id in passage.fact_ids:
      passage_ids[fact_id].append(passage.id)
  facts = []
  for i, raw in enumerate(raw_facts):
    stating = passage_ids[fact_id_at(i)]
    facts.append(
      Fact(
        fact_id=fact_id_at(i),
        relation=raw.relation,
        subject=raw.subject,
        object=raw.object,
        num_passages=len(stating),
        mentions=bucket_of(len(stating), config.buckets),
        passage_ids=tuple(stating),
      )
    )
  return facts


def _make_queries(
  facts: Sequence[Fact], queried: Sequence[int], rng: random.Random
) -> list[FactQuery]:
  queries = []
  for query_index, i in enumerate(queried):
    fact = facts[i]
    template = rng.choice(QUERY_TEMPLATES[fact.relation])
    queries.append(
      FactQuery(
        id=f"q{query_index:05d}",
        prompt=template.format(s=fact.subject),
        target=" " + fact.object,
        relevant_ids=fact.passage_ids,
        fact_id=fact.fact_id,
        relation=fact.relation,
        subject=fact.subject,
        object=fact.object,
        mentions=fact.mentions,
      )
    )
  return queries


def generate(config: HeldoutFactsConfig) -> HeldoutFacts:
  """Generates the data set for `config`; the same config, the same data.

  Args:
    config: sizes, buckets and seed.

  Returns:
    The facts (all of them, with the passages stating each), the passages
    (in corpus order) and the queries.

  Raises:
    ValueError: if names run out, or a query prompt would occur in the
      corpus.
  """
  rng = random.Random(config.seed)
  raw_facts = world.world_facts(config, rng)
  counts, queried = corpus.draw_counts(config, len(raw_facts), rng)
  passages = corpus.all_passages(raw_facts, counts, queried, config, rng)
  facts = _make_facts(raw_facts, passages, config)
  queries = _make_queries(facts, queried, rng)
  factbench.check_prompts_unseen(passages, queries)
  return HeldoutFacts(facts, passages, queries, config)
