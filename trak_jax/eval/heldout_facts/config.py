"""Sizes and draws of the held-out facts, and their mention buckets."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class HeldoutFactsConfig:
  """Sizes and draws of the data set. Defaults are the demo preset.

  Attributes:
    seed: seed of every random choice.
    num_guilds: guilds (2 facts each: leader and hall).
    num_rivers: rivers (1 fact: the lake it flows into).
    num_tribes: tribes (1 fact: their blade metal).
    num_ships: ships (2 facts: flag and home port).
    num_composers: composers (2 facts: instrument and mentor).
    num_other_people: people who are not composers (leaders and mentors).
    num_towns: towns (guild halls, home ports).
    num_realms: realms (ship flags).
    num_lakes: lakes (river mouths).
    num_queries: queried facts, split over buckets by `query_bucket_weights`.
    max_mentions: the most passages stating one fact.
    zipf_exponent: P(n passages) is proportional to n ** -zipf_exponent.
    buckets: (min, max) passages per fact, contiguous; the last ends at
      `max_mentions` and is labelled "min+".
    query_bucket_weights: bucket distribution of queried facts.
    facts_per_passage_weights: weights of 1, 2 and 3 facts in a passage.
    linked_fraction: chance that a passage's next fact shares an entity with
      its facts (where one is left), rather than being any fact.
    distractor_sentences: (min, max) fact-free sentences in a fact passage.
    near_miss_fraction: share of queried facts with a near-miss passage.
    num_filler_passages: passages that name nothing.
    filler_passage_sentences: (min, max) sentences of a filler passage.
    max_passage_chars: no passage is longer. Generated names cost more
      tokens than FactBench's words: at 160 characters the demo averages
      about 37 SentencePiece tokens (2,048 pieces) a passage, FactBench's
      demo 34, and the longest has 73 (FactBench: 95).
  """

  seed: int = 0
  num_guilds: int = 90
  num_rivers: int = 150
  num_tribes: int = 130
  num_ships: int = 90
  num_composers: int = 130
  num_other_people: int = 90
  num_towns: int = 40
  num_realms: int = 16
  num_lakes: int = 24
  num_queries: int = 400
  max_mentions: int = 20
  zipf_exponent: float = 1.1
  buckets: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (4, 8), (9, 20))
  query_bucket_weights: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
  facts_per_passage_weights: tuple[float, float, float] = (0.55, 0.3, 0.15)
  linked_fraction: float = 0.6
  distractor_sentences: tuple[int, int] = (0, 1)
  near_miss_fraction: float = 0.5
  num_filler_passages: int = 250
  filler_passage_sentences: tuple[int, int] = (2, 3)
  max_passage_chars: int = 160

  def __post_init__(self):
    buckets = self.buckets
    if not buckets or buckets[0][0] != 1 or buckets[-1][1] != self.max_mentions:
      raise ValueError(f"Buckets must span 1 to max_mentions: {buckets}.")
    if any(b[0] != a[1] + 1 for a, b in itertools.pairwise(buckets)) or any(
      hi < lo for lo, hi in buckets
    ):
      raise ValueError(f"Buckets must be contiguous ranges, got {buckets}.")
    weights = self.query_bucket_weights
    if len(weights) != len(buckets) or min(weights) < 0 or sum(weights) <= 0:
      raise ValueError(f"Need one weight >= 0 per bucket, got {weights}.")
    if self.num_queries > self.num_facts:
      raise ValueError(
        f"num_queries={self.num_queries} exceeds num_facts={self.num_facts}."
      )

  @property
  def num_facts(self) -> int:
    """Number of facts in the world."""
    pairs = self.num_guilds + self.num_ships + self.num_composers
    return 2 * pairs + self.num_rivers + self.num_tribes

  @classmethod
  def demo(cls, *, seed: int = 0) -> HeldoutFactsConfig:
    """About 3,500 passages and 400 queries."""
    return cls(seed=seed)

  @classmethod
  def tiny(cls, *, seed: int = 0) -> HeldoutFactsConfig:
    """A few hundred passages and 32 queries, for tests."""
    return cls(
      seed=seed,
      num_guilds=6,
      num_rivers=10,
      num_tribes=10,
      num_ships=6,
      num_composers=10,
      num_other_people=8,
      num_towns=8,
      num_realms=5,
      num_lakes=6,
      num_queries=32,
      num_filler_passages=30,
    )

  def to_json(self) -> str:
    """The config as a JSON document."""
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def bucket_label(bucket: tuple[int, int], *, last: bool = False) -> str:
  """ "1" for (1, 1), "4-8" for (4, 8); the last bucket reads "9+"."""
  lo, hi = bucket
  if last:
    return f"{lo}+"
  return str(lo) if lo == hi else f"{lo}-{hi}"


def bucket_labels(buckets: Sequence[tuple[int, int]]) -> list[str]:
  """The labels of `buckets`, in order."""
  return [
    bucket_label(b, last=i == len(buckets) - 1) for i, b in enumerate(buckets)
  ]


def bucket_of(count: int, buckets: Sequence[tuple[int, int]]) -> str:
  """The label of the bucket holding `count`.

  Raises:
    ValueError: if no bucket holds `count`.
  """
  for (lo, hi), label in zip(buckets, bucket_labels(buckets), strict=True):
    if lo <= count <= hi:
      return label
  raise ValueError(f"No bucket in {buckets} holds {count}.")
