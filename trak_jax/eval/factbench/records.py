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
  """A corpus passage; `fact_ids` is empty for filler passages.

  The held-out facts' passages are these with a `kind`.
  """

  id: str  # `passage_id_at` of its corpus position.
  text: str
  fact_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ClozeQuery:
  """A cloze query of either generator: `prompt + target` states the fact.

  Each generator's query adds the bucket of its fact, written last.
  """

  id: str
  prompt: str
  target: str  # " " + object.
  relevant_ids: tuple[str, ...]  # Exactly the passages stating the fact.
  fact_id: str
  relation: str
  subject: str
  object: str


@dataclasses.dataclass(frozen=True)
class FactQuery(ClozeQuery):
  """A FactBench cloze query: `prompt + target` states the fact."""

  frequency_bucket: str


class FactBench(NamedTuple):
  """A generated benchmark."""

  facts: list[Fact]
  passages: list[Passage]
  queries: list[FactQuery]
  config: FactBenchConfig


class RawFact(NamedTuple):
  """A knowledge-base fact before it has passages and an id."""

  subject: str
  relation: str
  object: str
  topic: str  # Passages group facts sharing a topic.


def fact_id_at(index: int) -> str:
  """The id of the fact at `index` of the generated facts."""
  return f"f{index:05d}"


def passage_id_at(position: int) -> str:
  """The id of the passage at `position` of the corpus."""
  return f"p{position:05d}"
