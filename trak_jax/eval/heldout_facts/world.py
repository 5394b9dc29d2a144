"""The fictional world: entities named from syllables, and their facts.

Guilds, rivers, tribes, ships, composers, towns, realms and lakes get names
built from syllables by a seeded RNG, none containing another or any fixed
string of the generator; metals and instruments are two small pools of plain
words.
"""

from __future__ import annotations

import random
import re

from trak_jax.eval.heldout_facts import templates
from trak_jax.eval.heldout_facts.config import HeldoutFactsConfig
from trak_jax.eval.heldout_facts.records import RawFact

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


def _reserved_text() -> str:
  """Every fixed string of the generator, lowercased, that names must avoid."""
  strings = [
    *(t for ts in templates.CORPUS_TEMPLATES.values() for t in ts),
    *(t for ts in templates.QUERY_TEMPLATES.values() for t in ts),
    *_METALS,
    *_INSTRUMENTS,
    *templates.MENTION_TEMPLATES,
    *templates.LONE_MENTIONS,
    *templates.NEAR_MISS_TEMPLATES,
    *templates.WORLD_TIMES,
    *templates.WORLD_EVENTS,
    *templates.WORLD_STANDALONE,
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


def world_facts(
  config: HeldoutFactsConfig, rng: random.Random
) -> list[RawFact]:
  """All facts of the world, relation by relation.

  Args:
    config: how many entities of each kind.
    rng: the generator's random state; draws here come first.

  Returns:
    One fact per (relation, subject), in `_SCHEMA` order.

  Raises:
    ValueError: if the syllables run out of distinct names.
  """
  names = _entities(config, rng)
  facts = []
  for relation, subject_kind, object_kind in _SCHEMA:
    for subject in names[subject_kind]:
      pool = [o for o in names[object_kind] if o != subject]
      facts.append(RawFact(relation, subject, rng.choice(pool)))
  return facts
