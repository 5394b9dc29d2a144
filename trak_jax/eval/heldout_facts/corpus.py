"""The corpus: how many passages state each fact, and the passages.

A fact is stated by a Zipf-like number of passages; a passage mixes 1 to 3
facts, preferring facts that share an entity, with fact-free sentences that
name the same entities. Near-miss passages name a queried fact's subject and
object without stating it; filler passages name nothing.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

from trak_jax.eval.factbench.planning import split_by_weights
from trak_jax.eval.factbench.records import fact_id_at, passage_id_at
from trak_jax.eval.heldout_facts import templates
from trak_jax.eval.heldout_facts.config import HeldoutFactsConfig
from trak_jax.eval.heldout_facts.records import Passage, RawFact


def _zipf_count(rng: random.Random, lo: int, hi: int, exponent: float) -> int:
  counts = range(lo, hi + 1)
  return rng.choices(counts, weights=[n**-exponent for n in counts])[0]


def draw_counts(
  config: HeldoutFactsConfig, num_facts: int, rng: random.Random
) -> tuple[list[int], list[int]]:
  """Passages per fact, and the queried facts (indices) in query order.

  Queried facts get exact bucket quotas and a Zipf count within their
  bucket; the others a Zipf count over 1 to `max_mentions`.

  Args:
    config: buckets, query weights, `max_mentions` and the Zipf exponent.
    num_facts: facts in the world.
    rng: the generator's random state.

  Returns:
    The passage count of every fact, and the queried fact indices.
  """
  queried = rng.sample(range(num_facts), config.num_queries)
  quotas = split_by_weights(config.query_bucket_weights, config.num_queries)
  buckets = [config.buckets[b] for b, q in enumerate(quotas) for _ in range(q)]
  rng.shuffle(buckets)
  bucket_by_fact = dict(zip(queried, buckets, strict=True))
  exponent = config.zipf_exponent
  counts = [
    _zipf_count(rng, *bucket_by_fact.get(i, (1, config.max_mentions)), exponent)
    for i in range(num_facts)
  ]
  return counts, queried


def _links(facts: Sequence[RawFact]) -> list[list[int]]:
  """For each fact, the other facts that share its subject or object."""
  by_name = collections.defaultdict(list)
  for i, fact in enumerate(facts):
    by_name[fact.subject].append(i)
    by_name[fact.object].append(i)
  return [
    sorted({j for name in fact[1:] for j in by_name[name]} - {i})
    for i, fact in enumerate(facts)
  ]


def _partner(
  plan: Sequence[int],
  links: Sequence[Sequence[int]],
  remaining: Sequence[int],
  pending: Sequence[int],
  rng: random.Random,
  *,
  linked_fraction: float,
) -> int | None:
  """A fact with passages left to add to `plan`, often one sharing an entity.

  Returns None when a few random draws find no fact left to add.
  """
  linked = [j for i in plan for j in links[i] if remaining[j] and j not in plan]
  if linked and rng.random() < linked_fraction:
    return rng.choice(linked)
  for _ in range(8):
    if not pending:
      return None
    j = pending[rng.randrange(len(pending))]
    if remaining[j] and j not in plan:
      return j
  return None


def _state(fact: RawFact, rng: random.Random) -> str:
  template = rng.choice(templates.CORPUS_TEMPLATES[fact.relation])
  return template.format(s=fact.subject, o=fact.object)


def _world_sentence(rng: random.Random) -> str:
  if rng.random() < 0.25:
    return rng.choice(templates.WORLD_STANDALONE)
  when = rng.choice(templates.WORLD_TIMES)
  return f"{when}, {rng.choice(templates.WORLD_EVENTS)}."


def _distractor(
  plan: Sequence[int],
  facts: Sequence[RawFact],
  names: Sequence[str],
  rng: random.Random,
) -> str:
  """A fact-free sentence, usually naming one of the passage's entities."""
  roll = rng.random()
  subject = facts[rng.choice(plan)].subject
  if roll < 0.45:
    other = rng.choice([n for n in names if n != subject])
    return rng.choice(templates.MENTION_TEMPLATES).format(s=subject, x=other)
  if roll < 0.6:
    return rng.choice(templates.LONE_MENTIONS).format(s=subject)
  return _world_sentence(rng)


def _fits(sentences: Sequence[str], extra: str, limit: int) -> bool:
  return len(" ".join([*sentences, extra])) <= limit


def _fact_passages(
  facts: Sequence[RawFact],
  counts: Sequence[int],
  config: HeldoutFactsConfig,
  rng: random.Random,
) -> list[tuple[str, tuple[int, ...]]]:
  """(text, fact indices) of passages; fact i is in exactly counts[i]."""
  links = _links(facts)
  names = sorted({n for fact in facts for n in fact[1:]})
  remaining = list(counts)
  pending = [i for i, count in enumerate(counts) for _ in range(count)]
  rng.shuffle(pending)
  passages = []
  while pending:
    first = pending.pop()
    if not remaining[first]:
      continue  # Used up as another passage's partner.
    remaining[first] -= 1
    plan, sentences = [first], [_state(facts[first], rng)]
    size = rng.choices((1, 2, 3), weights=config.facts_per_passage_weights)[0]
    while len(plan) < size:
      j = _partner(
        plan,
        links,
        remaining,
        pending,
        rng,
        linked_fraction=config.linked_fraction,
      )
      if j is None:
        break
      sentence = _state(facts[j], rng)
      if not _fits(sentences, sentence, config.max_passage_chars):
        break
      remaining[j] -= 1
      plan.append(j)
      sentences.append(sentence)
    for _ in range(rng.randint(*config.distractor_sentences)):
      sentence = _distractor(plan, facts, names, rng)
      if _fits(sentences, sentence, config.max_passage_chars):
        sentences.insert(rng.randint(0, len(sentences)), sentence)
    passages.append((" ".join(sentences), tuple(plan)))
  return passages


def _near_miss_text(fact: RawFact, rng: random.Random) -> str:
  sentences = [
    rng.choice(templates.NEAR_MISS_TEMPLATES).format(
      s=fact.subject, o=fact.object
    )
  ]
  if rng.random() < 0.5:
    sentences.insert(rng.randint(0, 1), _world_sentence(rng))
  return " ".join(sentences)


def _filler_text(config: HeldoutFactsConfig, rng: random.Random) -> str:
  num_sentences = rng.randint(*config.filler_passage_sentences)
  sentences = [_world_sentence(rng)]
  for _ in range(8 * num_sentences):
    if len(sentences) == num_sentences:
      break
    sentence = _world_sentence(rng)
    parts = sentence.rstrip(".").split(", ")
    # No time or event twice in a passage, and no passage too long.
    if not any(part in " ".join(sentences) for part in parts) and _fits(
      sentences, sentence, config.max_passage_chars
    ):
      sentences.append(sentence)
  return " ".join(sentences)


def all_passages(
  facts: Sequence[RawFact],
  counts: Sequence[int],
  queried: Sequence[int],
  config: HeldoutFactsConfig,
  rng: random.Random,
) -> list[Passage]:
  """Fact, near-miss and filler passages, shuffled, with their ids.

  Args:
    facts: the world's facts.
    counts: passages per fact; fact i is stated by exactly counts[i].
    queried: indices of the queried facts (some get a near miss).
    config: passage sizes and the number of near misses and fillers.
    rng: the generator's random state.

  Returns:
    The passages in corpus order.
  """
  slots = [
    (text, plan, "fact")
    for text, plan in _fact_passages(facts, counts, config, rng)
  ]
  num_near = round(config.near_miss_fraction * len(queried))
  for i in rng.sample(sorted(queried), num_near):
    slots.append((_near_miss_text(facts[i], rng), (), "near_miss"))
  for _ in range(config.num_filler_passages):
    slots.append((_filler_text(config, rng), (), "filler"))
  rng.shuffle(slots)
  return [
    Passage(
      id=passage_id_at(position),
      text=text,
      fact_ids=tuple(fact_id_at(i) for i in plan),
      kind=kind,
    )
    for position, (text, plan, kind) in enumerate(slots)
  ]
