"""How many passages state each fact, and which facts each passage states."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

from trak_jax.eval.factbench.config import FactBenchConfig
from trak_jax.eval.factbench.records import RawFact


def draw_counts(
  config: FactBenchConfig, num_facts: int, rng: random.Random
) -> tuple[list[int], set[int]]:
  """Passages per fact and the set of queried facts.

  Args:
    config: buckets and their weights, and the number of queries.
    num_facts: facts in the knowledge base.
    rng: the generator's random state.

  Returns:
    The passage count of every fact, and the indices of the queried facts.
  """
  queried = set(rng.sample(range(num_facts), config.num_queries))
  # Exact quotas for queried facts, so each bucket gets its share.
  quotas = split_by_weights(config.query_bucket_weights, config.num_queries)
  query_buckets = [b for b, quota in enumerate(quotas) for _ in range(quota)]
  rng.shuffle(query_buckets)
  bucket_by_fact = dict(zip(sorted(queried), query_buckets, strict=True))
  counts = []
  for index in range(num_facts):
    bucket = bucket_by_fact.get(index)
    if bucket is None:
      buckets = range(len(config.buckets))
      bucket = rng.choices(buckets, weights=config.bucket_weights)[0]
    counts.append(rng.randint(*config.buckets[bucket]))
  return counts, queried


def split_by_weights(weights: Sequence[float], total: int) -> list[int]:
  """Splits `total` by `weights` (largest remainders get the rest).

  Both generators give their queried facts exact bucket quotas with it.

  Args:
    weights: one weight >= 0 per share, not all 0.
    total: what is split.

  Returns:
    One integer share per weight; the shares sum to `total`.
  """
  shares = [total * w / sum(weights) for w in weights]
  quotas = [int(share) for share in shares]
  order = sorted(range(len(shares)), key=lambda i: quotas[i] - shares[i])
  for i in order[: total - sum(quotas)]:
    quotas[i] += 1
  return quotas


def _pack_topic(
  fact_indices: Sequence[int],
  counts: Sequence[int],
  rng: random.Random,
  *,
  max_facts: int,
) -> list[tuple[int, ...]]:
  """Plans passages for one topic; fact i appears in exactly counts[i]."""
  plans = []
  for round_index in range(max(counts[i] for i in fact_indices)):
    active = [i for i in fact_indices if counts[i] > round_index]
    rng.shuffle(active)
    while active:
      size = rng.randint(1, min(max_facts, len(active)))
      plans.append(tuple(active[:size]))
      active = active[size:]
  return plans


def _add_distractors(
  plans: list[tuple[int, ...]],
  facts: Sequence[RawFact],
  counts: list[int],
  queried: set[int],
  config: FactBenchConfig,
) -> None:
  """Adds single-fact passages of non-queried facts until every queried fact
  has its distractors: passages about its subject stating another relation,
  and passages stating its relation of another subject."""
  plans_by_fact = collections.defaultdict(set)
  for plan_index, plan in enumerate(plans):
    for i in plan:
      plans_by_fact[i].add(plan_index)
  by_subject = collections.defaultdict(list)
  by_relation = collections.defaultdict(list)
  for i, fact in enumerate(facts):
    by_subject[fact.subject].append(i)
    by_relation[fact.relation].append(i)
  max_count = config.buckets[-1][1]
  for q in sorted(queried):
    groups = (
      (
        [i for i in by_subject[facts[q].subject] if i != q],
        config.subject_distractors,
      ),
      (
        [
          i
          for i in by_relation[facts[q].relation]
          if facts[i].subject != facts[q].subject
        ],
        config.relation_distractors,
      ),
    )
    for group, needed in groups:
      have = set().union(*(plans_by_fact[i] for i in group))
      have -= plans_by_fact[q]
      candidates = [i for i in group if i not in queried]
      for _ in range(needed - len(have)):
        candidates = [i for i in candidates if counts[i] < max_count]
        if not candidates:
          break
        extra = min(candidates, key=lambda i: (counts[i], i))
        plans.append((extra,))
        plans_by_fact[extra].add(len(plans) - 1)
        counts[extra] += 1


def plan_passages(
  facts: Sequence[RawFact],
  counts: list[int],
  queried: set[int],
  config: FactBenchConfig,
  rng: random.Random,
) -> list[tuple[int, ...]]:
  """Which facts each passage states, topic by topic, then distractors.

  Args:
    facts: the knowledge base.
    counts: passages per fact; raised where distractor passages are added.
    queried: indices of the queried facts.
    config: facts per passage and distractors per queried fact.
    rng: the generator's random state.

  Returns:
    One tuple of fact indices per fact passage.
  """
  by_topic = collections.defaultdict(list)
  for i, fact in enumerate(facts):
    by_topic[fact.topic].append(i)
  plans = []
  for topic in sorted(by_topic):
    plans += _pack_topic(
      by_topic[topic], counts, rng, max_facts=config.max_facts_per_passage
    )
  _add_distractors(plans, facts, counts, queried, config)
  return plans
