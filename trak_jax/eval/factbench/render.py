"""The text of FactBench: fact and filler passages, and query prompts."""

from __future__ import annotations

import random
from collections.abc import Sequence

from trak_jax.eval.factbench.config import FactBenchConfig
from trak_jax.eval.factbench.records import Fact, RawFact
from trak_jax.eval.factbench.templates import CORPUS_TEMPLATES, QUERY_TEMPLATES

_FILLER_SUBJECTS = (
  "The old bridge",
  "A small bakery",
  "The town library",
  "The weekly market",
  "A quiet park",
  "The evening ferry",
  "The school choir",
  "A local football club",
  "The museum cafe",
  "The night bus",
  "A street musician",
  "The village fair",
  "The harbour",
  "A new bookshop",
  "The community garden",
)
_FILLER_PREDICATES = (
  "was busier than usual",
  "stayed open late",
  "drew a large crowd",
  "was repainted in bright colours",
  "closed early for repairs",
  "got a new sign",
  "was the talk of the neighbourhood",
  "raised money for charity",
  "looked lovely in the sunshine",
  "was quieter than expected",
)
_FILLER_TIMES = (
  "last spring",
  "on Tuesday",
  "during the holidays",
  "after the storm",
  "every weekend",
  "this year",
  "in the early morning",
  "before the festival",
)
_FILLER_STANDALONE = (
  "Nobody remembers exactly when the tradition began.",
  "It rained for most of the afternoon.",
  "The rest of the story is less well known.",
  "Opinions on the matter differ widely.",
  "Few details of that period survive.",
  "Such questions are rarely simple.",
)
# Fact-free sentences that mention the passage's topic.
_TOPIC_FILLERS = (
  "Much has been written about {s}.",
  "{s} is mentioned in several old newspaper articles.",
  "Some readers may already have heard of {s}.",
  "There is more to say about {s} than fits here.",
)


def _article(word: str) -> str:
  return "an" if word[0].lower() in "aeiou" else "a"


def _state(fact: RawFact, rng: random.Random) -> str:
  template = rng.choice(CORPUS_TEMPLATES[fact.relation])
  return template.format(s=fact.subject, o=fact.object, a=_article(fact.object))


def _filler_sentence(rng: random.Random) -> str:
  if rng.random() < 0.25:
    return rng.choice(_FILLER_STANDALONE)
  subject = rng.choice(_FILLER_SUBJECTS)
  predicate = rng.choice(_FILLER_PREDICATES)
  return f"{subject} {predicate} {rng.choice(_FILLER_TIMES)}."


def _fact_passage_text(
  plan: Sequence[int],
  facts: Sequence[RawFact],
  config: FactBenchConfig,
  rng: random.Random,
) -> str:
  sentences = [_state(facts[i], rng) for i in plan]
  for _ in range(rng.randint(*config.filler_sentences)):
    if rng.random() < config.topic_filler_fraction:
      topic = facts[plan[0]].topic
      filler = rng.choice(_TOPIC_FILLERS).format(s=topic)
    else:
      filler = _filler_sentence(rng)
    sentences.insert(rng.randint(0, len(sentences)), filler)
  return " ".join(sentences)


def _filler_passage_text(config: FactBenchConfig, rng: random.Random) -> str:
  num_sentences = rng.randint(*config.filler_passage_sentences)
  return " ".join(_filler_sentence(rng) for _ in range(num_sentences))


def prompt(fact: Fact, rng: random.Random) -> str:
  """The cloze prompt of `fact`, from a query template."""
  template = rng.choice(QUERY_TEMPLATES[fact.relation])
  return template.format(s=fact.subject, a=_article(fact.object))


def render_passages(
  plans: Sequence[tuple[int, ...]],
  facts: Sequence[RawFact],
  config: FactBenchConfig,
  rng: random.Random,
) -> list[tuple[str, tuple[int, ...]]]:
  """Shuffles fact and filler passages; returns (text, fact indices)."""
  slots = list(plans) + [()] * config.num_filler_passages
  rng.shuffle(slots)
  rendered = []
  for plan in slots:
    if plan:
      text = _fact_passage_text(plan, facts, config, rng)
    else:
      text = _filler_passage_text(config, rng)
    rendered.append((text, plan))
  return rendered
