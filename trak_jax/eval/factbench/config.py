"""How big FactBench is, how it is drawn, and its frequency buckets."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class FactBenchConfig:
  """How big FactBench is and how it is drawn. Defaults are the demo preset.

  Attributes:
    seed: seed of every random choice.
    num_countries: countries (3 facts each: capital, continent, currency).
    num_cities: non-capital cities (1 fact each: located_in).
    num_people: generated people (5 facts each).
    num_queries: queried facts, split over buckets by `query_bucket_weights`.
    num_filler_passages: fact-free passages.
    filler_passage_sentences: (min, max) sentences of a filler passage.
    filler_sentences: (min, max) filler sentences added to a fact passage.
    topic_filler_fraction: share of filler sentences naming the topic.
    max_facts_per_passage: at most this many facts per passage (1 to 3).
    subject_distractors: for every queried fact, at least this many passages
      state another relation of its subject (where the knowledge base allows).
    relation_distractors: likewise, passages stating the same relation of
      another subject.
    buckets: (min, max) passages per fact, contiguous and increasing.
    bucket_weights: bucket distribution of facts that are not queried.
    query_bucket_weights: bucket distribution of queried facts.
    faker_locale: locale of generated people and companies.
  """

  seed: int = 0
  num_countries: int = 50
  num_cities: int = 80
  num_people: int = 70
  num_queries: int = 360
  num_filler_passages: int = 150
  filler_passage_sentences: tuple[int, int] = (2, 4)
  filler_sentences: tuple[int, int] = (0, 1)
  topic_filler_fraction: float = 0.3
  max_facts_per_passage: int = 3
  subject_distractors: int = 1
  relation_distractors: int = 1
  buckets: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (4, 10), (11, 30))
  bucket_weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
  query_bucket_weights: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
  faker_locale: str = "en_US"

  def __post_init__(self):
    _validate_buckets(self.buckets)
    for weights in (self.bucket_weights, self.query_bucket_weights):
      if len(weights) != len(self.buckets) or min(weights) < 0:
        raise ValueError(f"Need one weight >= 0 per bucket, got {weights}.")
      if sum(weights) <= 0:
        raise ValueError(f"Bucket weights must not all be 0: {weights}.")
    if not 1 <= self.max_facts_per_passage <= 3:
      raise ValueError("max_facts_per_passage must be 1, 2 or 3.")
    if self.num_queries > self.num_facts:
      raise ValueError(
        f"num_queries={self.num_queries} exceeds num_facts={self.num_facts}."
      )

  @property
  def num_facts(self) -> int:
    """Number of facts in the knowledge base."""
    return 3 * self.num_countries + self.num_cities + 5 * self.num_people

  @classmethod
  def demo(cls, *, seed: int = 0) -> FactBenchConfig:
    """A few thousand passages and a few hundred queries."""
    return cls(seed=seed)

  @classmethod
  def tiny(cls, *, seed: int = 0) -> FactBenchConfig:
    """About 150 passages and 30 queries, for tests."""
    return cls(
      seed=seed,
      num_countries=5,
      num_cities=8,
      num_people=5,
      num_queries=30,
      num_filler_passages=25,
      bucket_weights=(0.6, 0.3, 0.1, 0.0),
      query_bucket_weights=(0.4, 0.3, 0.2, 0.1),
    )

  def to_json(self) -> str:
    """The config as a JSON document."""
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def _validate_buckets(buckets: Sequence[tuple[int, int]]) -> None:
  if not buckets or buckets[0][0] < 1:
    raise ValueError(f"Buckets must start at 1 or more, got {buckets}.")
  contiguous = all(b[0] == a[1] + 1 for a, b in itertools.pairwise(buckets))
  if not contiguous or any(hi < lo for lo, hi in buckets):
    raise ValueError(f"Buckets must be contiguous ranges, got {buckets}.")


def bucket_label(bucket: tuple[int, int]) -> str:
  """The label of a bucket: "1" for (1, 1), "4-10" for (4, 10)."""
  lo, hi = bucket
  return str(lo) if lo == hi else f"{lo}-{hi}"


def bucket_of(count: int, buckets: Sequence[tuple[int, int]]) -> str:
  """The label of the bucket holding `count`.

  Raises:
    ValueError: if no bucket holds `count`.
  """
  for lo, hi in buckets:
    if lo <= count <= hi:
      return bucket_label((lo, hi))
  raise ValueError(f"No bucket in {buckets} holds {count}.")
