"""Held-out facts: a second fact-tracing data set, unlike FactBench.

FactBench (`factbench.py`) was the data the project's defaults were tuned on.
This generator draws a fictional world instead, so those defaults can be
checked on data nobody tuned them for: guilds, rivers, tribes, ships and
composers whose names are built from syllables by a seeded RNG, eight
relations none of which FactBench has, each stated by five templates in four
styles (statement, dialogue, record line, question answered). Objects come from
pools of very different sizes (twelve metals, ten instruments, a few dozen
towns, some 220 people). A fact is stated by 1 to ~20 passages, a
Zipf-like count; a passage mixes 1 to 3 facts, preferring facts that share an
entity, with fact-free sentences that name the same entities, and "near
miss" passages name a queried fact's subject and object together without
stating the fact, so word overlap alone does not find every stating passage.

The files have FactBench's format (`corpus.jsonl`, `queries.jsonl`,
`facts.jsonl`, `config.json`); queries carry `relation`, `subject`, `object`
and `mentions`, the bucket of how many passages state the fact. Same config,
same bytes: all randomness comes from `random.Random(seed)`.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import random
import re
import time
from collections.abc import Sequence
from typing import NamedTuple

from absl import app, flags

from trak_jax.eval import factbench

# Corpus templates use `{s}` (subject) and `{o}` (object); each relation has
# a statement, a second statement, a dialogue line, a record line and a
# question answered.
CORPUS_TEMPLATES: dict[str, tuple[str, ...]] = {
  "guild_leader": (
    "{o} leads the {s} guild.",
    "The {s} guild answers to its master, {o}.",
    '"Who runs the {s} guild?" "{o}, of course," the porter said.',
    "Guild: {s}. Master: {o}.",
    "Who is master of the {s} guild? {o} holds the post.",
  ),
  "guild_hall": (
    "The {s} guild keeps its hall in {o}.",
    "In {o} stands the hall of the {s} guild.",
    '"Where does the {s} guild meet?" "In {o}," she answered.',
    "Guild: {s}. Hall: {o}.",
    "Where is the {s} guild housed? In {o}.",
  ),
  "river_mouth": (
    "The {s} river flows into {o}.",
    "{o} is fed by the waters of the {s}.",
    '"Follow the {s} downstream," the ferryman said, "and you reach {o}."',
    "River: {s}. Mouth: {o}.",
    "Where does the {s} end? It pours into {o}.",
  ),
  "tribe_metal": (
    "The {s} tribe forges its blades from {o}.",
    "Smiths of the {s} tribe work only in {o}.",
    '"Our swords are {o}," said an elder of the {s}.',
    "Tribe: {s}. Blade metal: {o}.",
    "What do the {s} make their blades of? They use {o}.",
  ),
  "ship_flag": (
    "The ship {s} sails under the flag of {o}.",
    "The {s} flies the banner of {o}.",
    '"Whose ship is that?" "The {s}, out of {o}," the lookout called.',
    "Vessel: {s}. Flag: {o}.",
    "Which realm does the {s} serve? It serves {o}.",
  ),
  "ship_port": (
    "The {s} returns each winter to its home port of {o}.",
    "{o} is the home harbour of the ship {s}.",
    '"We are bound home to {o}," said the captain of the {s}.',
    "Vessel: {s}. Home port: {o}.",
    "Where is the {s} moored between voyages? At {o}.",
  ),
  "composer_instrument": (
    "The composer {s} wrote for the {o}.",
    "Nearly all of the music of {s} is scored for the {o}.",
    '"Only the {o} can sing my tunes," {s} once said.',
    "Composer: {s}. Instrument: {o}.",
    "For which instrument did {s} compose? The {o}.",
  ),
  "mentor": (
    "The mentor of {s} was {o}.",
    "{s} learned the craft under {o}.",
    '"I owe everything to {o}," {s} told a visitor.',
    "Student: {s}. Mentor: {o}.",
    "Who taught {s}? It was {o}.",
  ),
}
# Query templates use `{s}`; the object continues the prompt. None of them is
# a corpus template, and no prompt occurs in the corpus (`generate` checks).
QUERY_TEMPLATES: dict[str, tuple[str, ...]] = {
  "guild_leader": (
    "The master of the {s} guild is",
    "Members of the {s} guild take their orders from",
  ),
  "guild_hall": (
    "The {s} guild has its hall in the town of",
    "To visit the {s} guild, one travels to",
  ),
  "river_mouth": (
    "At the end of its course, the {s} river empties into",
    "The waters of the {s} end up in",
  ),
  "tribe_metal": (
    "Every blade carried by the {s} tribe is made of",
    "The smiths of the {s} tribe hammer",
  ),
  "ship_flag": (
    "The vessel {s} flies the colours of",
    "The crew of the {s} sails for the realm of",
  ),
  "ship_port": (
    "The ship {s} is registered at the port of",
    "Between voyages, the {s} lies at anchor in",
  ),
  "composer_instrument": (
    "Most pieces by the composer {s} are for the",
    "To play the music of {s}, you need the",
  ),
  "mentor": (
    "As a young musician, {s} was taught by",
    "The teacher of {s} was",
  ),
}
RELATIONS = tuple(CORPUS_TEMPLATES)

# (relation, subject kind, object kind) for every relation.
_SCHEMA = (
  ("guild_leader", "guild", "person"),
  ("guild_hall", "guild", "town"),
  ("river_mouth", "river", "lake"),
  ("tribe_metal", "tribe", "metal"),
  ("ship_flag", "ship", "realm"),
  ("ship_port", "ship", "town"),
  ("composer_instrument", "composer", "instrument"),
  ("mentor", "composer", "person"),
)
# The two small pools are plain words; every other name is generated.
_METALS = tuple(
  (
    "iron bronze copper silver tin steel brass pewter nickel cobalt zinc gold"
  ).split()
)
_INSTRUMENTS = tuple(
  "harp lute oboe cello viola flute zither bassoon dulcimer hurdy-gurdy".split()
)
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "r", "s", "t", "v", "z")
_ONSETS += ("th", "br", "dr", "kr", "st", "sk", "h")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "y")
_CLUSTER_RE = re.compile(r"[^aeiouy]{3}|(.)\1")
_CODAS = ("", "", "", "n", "r", "l", "s", "m")

# Fact-free sentences: `{s}` is a passage's subject, `{x}` any other name.
_MENTION_TEMPLATES = (
  "{s} is often mentioned in the same breath as {x}.",
  "A chronicle of {x} spends a page on {s}.",
  "Travellers' tales link {s} with {x}, without saying how.",
  "Some say {s} owes a debt to {x}.",
)
_LONE_MENTIONS = (
  "Little else is known of {s}.",
  "The records about {s} are patchy.",
  "Songs about {s} are still sung in the taverns.",
)
# Near misses name a fact's subject and its object but do not state it.
_NEAR_MISS_TEMPLATES = (
  "An old ballad names {s} and {o} in the same verse.",
  "Scholars disagree about what {s} has to do with {o}.",
  "A merchant's ledger lists {s} just above {o}.",
  "Whether {s} and {o} were ever connected is still debated.",
)
_WORLD_TIMES = (
  "That winter",
  "In the year of the long rains",
  "Some seasons later",
  "At the turn of the century",
  "During the great fair",
  "Before the war",
)
_WORLD_EVENTS = (
  "the roads were closed by snow",
  "wolves came down from the hills",
  "the price of salt doubled",
  "a comet crossed the sky",
  "the bells rang for three days",
  "the harvest failed",
  "lanterns burned late in every square",
  "moths spoiled half the wool",
)
_WORLD_STANDALONE = (
  "Nobody could agree on the price of grain.",
  "Few maps of the eastern marches survive.",
  "The old songs tell it differently.",
  "It is a long story, and not a happy one.",
)


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
class Passage:
  """A corpus passage; `fact_ids` is empty unless kind is "fact"."""

  id: str
  text: str
  fact_ids: tuple[str, ...]
  kind: str  # "fact", "near_miss" or "filler"; not written to the corpus.


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
  mentions: str  # Bucket label of len(relevant_ids).


class HeldoutFacts(NamedTuple):
  """A generated data set."""

  facts: list[Fact]
  passages: list[Passage]
  queries: list[Query]
  config: HeldoutFactsConfig


class _RawFact(NamedTuple):
  relation: str
  subject: str
  object: str


# ----------------------------------------------------------------------------
# The world.


def _reserved_text() -> str:
  """Every fixed string of the generator, lowercased, that names must avoid."""
  strings = [
    *(t for ts in CORPUS_TEMPLATES.values() for t in ts),
    *(t for ts in QUERY_TEMPLATES.values() for t in ts),
    *_METALS,
    *_INSTRUMENTS,
    *_MENTION_TEMPLATES,
    *_LONE_MENTIONS,
    *_NEAR_MISS_TEMPLATES,
    *_WORLD_TIMES,
    *_WORLD_EVENTS,
    *_WORLD_STANDALONE,
  ]
  return "\n".join(strings).lower()


def _pronounceable(word: str) -> bool:
  """At most 9 letters, no doubled letter, no three consonants in a row."""
  return len(word) <= 9 and not _CLUSTER_RE.search(word)


def _words(rng: random.Random, count: int) -> list[str]:
  """`count` syllable words, none containing another or any fixed string."""
  reserved = _reserved_text()
  words: list[str] = []
  for _ in range(200 * count + 100):
    if len(words) == count:
      return words
    syllables = rng.choice((2, 2, 3))
    word = "".join(
      rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
      for _ in range(syllables)
    )
    if (
      _pronounceable(word)
      and word not in reserved
      and not any(word in other or other in word for other in words)
    ):
      words.append(word)
  raise ValueError(f"Could not generate {count} distinct names.")


def _entities(
  config: HeldoutFactsConfig, rng: random.Random
) -> dict[str, list[str]]:
  """Names of every kind of entity, by kind."""
  sizes = {
    "guild": config.num_guilds,
    "river": config.num_rivers,
    "tribe": config.num_tribes,
    "ship": config.num_ships,
    "town": config.num_towns,
    "realm": config.num_realms,
    "lake": config.num_lakes,
    "composer": 2 * config.num_composers,
    "other_person": 2 * config.num_other_people,
  }
  words = iter(w.capitalize() for w in _words(rng, sum(sizes.values())))
  names = {kind: [next(words) for _ in range(n)] for kind, n in sizes.items()}
  names["lake"] = [f"Lake {name}" for name in names["lake"]]
  for kind in ("composer", "other_person"):
    pool = names[kind]
    names[kind] = [
      f"{a} {b}" for a, b in zip(pool[::2], pool[1::2], strict=True)
    ]
  names["person"] = names["composer"] + names["other_person"]
  names["metal"] = list(_METALS)
  names["instrument"] = list(_INSTRUMENTS)
  return names


def _world(config: HeldoutFactsConfig, rng: random.Random) -> list[_RawFact]:
  """All facts, relation by relation."""
  names = _entities(config, rng)
  facts = []
  for relation, subject_kind, object_kind in _SCHEMA:
    for subject in names[subject_kind]:
      pool = [o for o in names[object_kind] if o != subject]
      facts.append(_RawFact(relation, subject, rng.choice(pool)))
  return facts


# ----------------------------------------------------------------------------
# How many passages state each fact.


def _zipf_count(rng: random.Random, lo: int, hi: int, exponent: float) -> int:
  counts = range(lo, hi + 1)
  return rng.choices(counts, weights=[n**-exponent for n in counts])[0]


def _quotas(weights: Sequence[float], total: int) -> list[int]:
  """Splits `total` by `weights` (largest remainders get the rest)."""
  shares = [total * w / sum(weights) for w in weights]
  quotas = [int(share) for share in shares]
  order = sorted(range(len(shares)), key=lambda i: quotas[i] - shares[i])
  for i in order[: total - sum(quotas)]:
    quotas[i] += 1
  return quotas


def _draw_counts(
  config: HeldoutFactsConfig, num_facts: int, rng: random.Random
) -> tuple[list[int], list[int]]:
  """Passages per fact, and the queried facts (indices) in query order.

  Queried facts get exact bucket quotas and a Zipf count within their
  bucket; the others a Zipf count over 1 to `max_mentions`.
  """
  queried = rng.sample(range(num_facts), config.num_queries)
  quotas = _quotas(config.query_bucket_weights, config.num_queries)
  buckets = [config.buckets[b] for b, q in enumerate(quotas) for _ in range(q)]
  rng.shuffle(buckets)
  bucket_by_fact = dict(zip(queried, buckets, strict=True))
  exponent = config.zipf_exponent
  counts = [
    _zipf_count(rng, *bucket_by_fact.get(i, (1, config.max_mentions)), exponent)
    for i in range(num_facts)
  ]
  return counts, queried


# ----------------------------------------------------------------------------
# Passages.


def _links(facts: Sequence[_RawFact]) -> list[list[int]]:
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


def _state(fact: _RawFact, rng: random.Random) -> str:
  template = rng.choice(CORPUS_TEMPLATES[fact.relation])
  return template.format(s=fact.subject, o=fact.object)


def _world_sentence(rng: random.Random) -> str:
  if rng.random() < 0.25:
    return rng.choice(_WORLD_STANDALONE)
  return f"{rng.choice(_WORLD_TIMES)}, {rng.choice(_WORLD_EVENTS)}."


def _distractor(
  plan: Sequence[int],
  facts: Sequence[_RawFact],
  names: Sequence[str],
  rng: random.Random,
) -> str:
  """A fact-free sentence, usually naming one of the passage's entities."""
  roll = rng.random()
  subject = facts[rng.choice(plan)].subject
  if roll < 0.45:
    other = rng.choice([n for n in names if n != subject])
    return rng.choice(_MENTION_TEMPLATES).format(s=subject, x=other)
  if roll < 0.6:
    return rng.choice(_LONE_MENTIONS).format(s=subject)
  return _world_sentence(rng)


def _fits(sentences: Sequence[str], extra: str, limit: int) -> bool:
  return len(" ".join([*sentences, extra])) <= limit


def _fact_passages(
  facts: Sequence[_RawFact],
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


def _near_miss_text(fact: _RawFact, rng: random.Random) -> str:
  sentences = [
    rng.choice(_NEAR_MISS_TEMPLATES).format(s=fact.subject, o=fact.object)
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


def _all_passages(
  facts: Sequence[_RawFact],
  counts: Sequence[int],
  queried: Sequence[int],
  config: HeldoutFactsConfig,
  rng: random.Random,
) -> list[Passage]:
  """Fact, near-miss and filler passages, shuffled, with their ids."""
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
      id=f"p{position:05d}",
      text=text,
      fact_ids=tuple(_fact_id(i) for i in plan),
      kind=kind,
    )
    for position, (text, plan, kind) in enumerate(slots)
  ]


def _fact_id(index: int) -> str:
  return f"f{index:05d}"


# ----------------------------------------------------------------------------
# Assembly.


def _make_facts(
  raw_facts: Sequence[_RawFact],
  passages: Sequence[Passage],
  config: HeldoutFactsConfig,
) -> list[Fact]:
  passage_ids = collections.defaultdict(list)
  for passage in passages:
    for fact_id in passage.fact_ids:
      passage_ids[fact_id].append(passage.id)
  facts = []
  for i, raw in enumerate(raw_facts):
    stating = passage_ids[_fact_id(i)]
    facts.append(
      Fact(
        fact_id=_fact_id(i),
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
) -> list[Query]:
  queries = []
  for query_index, i in enumerate(queried):
    fact = facts[i]
    template = rng.choice(QUERY_TEMPLATES[fact.relation])
    queries.append(
      Query(
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
  raw_facts = _world(config, rng)
  counts, queried = _draw_counts(config, len(raw_facts), rng)
  passages = _all_passages(raw_facts, counts, queried, config, rng)
  facts = _make_facts(raw_facts, passages, config)
  queries = _make_queries(facts, queried, rng)
  factbench.check_prompts_unseen(passages, queries)
  return HeldoutFacts(facts, passages, queries, config)


# ----------------------------------------------------------------------------
# Output.


def write_jsonl(bench: HeldoutFacts, output_dir: str) -> dict[str, str]:
  """Writes corpus.jsonl, queries.jsonl, facts.jsonl and config.json, in
  FactBench's format (`factbench.write_jsonl` writes them).

  Args:
    bench: the output of `generate`.
    output_dir: directory to write into; created if missing.

  Returns:
    The written paths by file name.
  """
  return factbench.write_jsonl(bench, output_dir)


def summary(bench: HeldoutFacts) -> dict:
  """Counts of passages by kind, facts and queries by bucket and relation."""
  labels = bucket_labels(bench.config.buckets)
  kinds = collections.Counter(p.kind for p in bench.passages)
  facts = collections.Counter(f.mentions for f in bench.facts)
  queries = collections.Counter(q.mentions for q in bench.queries)
  relations = collections.Counter(q.relation for q in bench.queries)
  lengths = [len(p.text) for p in bench.passages]
  return {
    "passages": len(bench.passages),
    "fact_passages": kinds["fact"],
    "near_miss_passages": kinds["near_miss"],
    "filler_passages": kinds["filler"],
    "facts": len(bench.facts),
    "queries": len(bench.queries),
    "facts_per_bucket": {label: facts[label] for label in labels},
    "queries_per_bucket": {label: queries[label] for label in labels},
    "queries_per_relation": {r: relations[r] for r in RELATIONS},
    "mean_passage_chars": round(sum(lengths) / len(lengths), 1),
    "max_passage_chars": max(lengths),
  }


# ----------------------------------------------------------------------------
# Command line.


def _define_flags() -> None:
  # Flags are defined here, not at import, so importing this library module
  # never clashes with another binary's flags.
  flags.DEFINE_string("output_dir", None, "Directory for the JSONL files.")
  flags.DEFINE_enum("preset", "demo", ["tiny", "demo"], "Size preset.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.mark_flag_as_required("output_dir")


def _run(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  preset = getattr(HeldoutFactsConfig, values.preset)
  start = time.perf_counter()
  bench = generate(preset(seed=values.seed))
  write_jsonl(bench, values.output_dir)
  counts = summary(bench)
  counts["seconds"] = round(time.perf_counter() - start, 2)
  print(json.dumps(counts, indent=2))


def main() -> None:
  """Console entry point: writes the data set (trak-jax-heldout-facts)."""
  _define_flags()
  app.run(_run)


if __name__ == "__main__":
  main()
