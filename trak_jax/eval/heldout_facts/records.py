"""What the held-out data set is made of: facts, passages and queries."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from trak_jax.eval.factbench import records as factbench_records
from trak_jax.eval.heldout_facts.config import HeldoutFactsConfig


@dataclasses.dataclass(frozen=True)
class Fact:
  """A (subject, relation, object) fact and the passages stating it."""

  fact_id: str
  relation: str
  subject: str
  object: str
  num_passages: int
  mentions: str  # Bucket label of num_passages.
  passage_ids: tuple[str, ...]  # Sorted ids of the passages stating it.


@dataclasses.dataclass(frozen=True)
class Passage(factbench_records.Passage):
  """A corpus passage; `fact_ids` is empty unless kind is "fact"."""

  kind: str  # "fact", "near_miss" or "filler"; not written to the corpus.


@dataclasses.dataclass(frozen=True)
class FactQuery(factbench_records.ClozeQuery):
  """A cloze query: `prompt + target` states the fact."""

  mentions: str  # Bucket label of len(relevant_ids).


class HeldoutFacts(NamedTuple):
  """A generated data set."""

  facts: list[Fact]
  passages: list[Passage]
  queries: list[FactQuery]
  config: HeldoutFactsConfig


class RawFact(NamedTuple):
  """A fact of the world before it has passages and an id."""

  relation: str
  subject: str
  object: str
