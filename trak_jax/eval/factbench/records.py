"""What FactBench is made of: facts, passages, queries and the bench."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from trak_jax.eval.factbench.config import FactBenchConfig


@dataclasses.dataclass(frozen=True)
class Fact:
  """A (subject, relation, object) fact and the passages stating it."""

  fact_id: str
  subject: str
  relation: str
  object: str
  num_passages: int
  frequency_bucket: str
  passage_ids: tuple[str, ...]  # Sorted ids of the passages stating it.


@dataclasses.dataclass(frozen=True)
class Passage:
  """A corpus passage; `fact_ids` is empty for filler passages."""

  id: str
  text: str
  fact_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Query:
  """A cloze query: `prompt + target` states the fact."""

  id: str
  prompt: str
  target: str  # " " + object.
  relevant_ids: tuple[str, ...]  # Exactly the passages stating the fact.
  fact_id: str
  relation: str
  subject: str
  object: str
  frequency_bucket: str


class FactBench(NamedTuple):
  """A generated benchmark."""

  facts: list[Fact]
  passages: list[Passage]
  queries: list[Query]
  config: FactBenchConfig


class RawFact(NamedTuple):
  """A knowledge-base fact before it has passages and an id."""

  subject: str
  relation: str
  object: str
  topic: str  # Passages group facts sharing a topic.
