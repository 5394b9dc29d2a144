"""Held-out facts: a second fact-tracing data set, unlike FactBench.

FactBench (`trak_jax.eval.factbench`) was the data the project's defaults were
tuned on. This generator draws a fictional world instead, so those defaults can
be checked on data nobody tuned them for: guilds, rivers, tribes, ships and
composers whose names are built from syllables by a seeded RNG, eight relations
none of which FactBench has, each stated by five templates in four styles
(statement, dialogue, record line, question answered). Objects come from pools
of very different sizes (twelve metals, ten instruments, a few dozen towns,
some 220 people). A fact is stated by 1 to ~20 passages, a Zipf-like count; a
passage mixes 1 to 3 facts, preferring facts that share an entity, with
fact-free sentences that name the same entities, and "near miss" passages name
a queried fact's subject and object together without stating the fact, so word
overlap alone does not find every stating passage.

The files have FactBench's format (`corpus.jsonl`, `queries.jsonl`,
`facts.jsonl`, `config.json`); queries carry `relation`, `subject`, `object`
and `mentions`, the bucket of how many passages state the fact. Same config,
same bytes: all randomness comes from `random.Random(seed)`.

Modules, bottom up: `templates` (relations and every fixed sentence),
`config` (sizes, draws, mention buckets), `records` (facts, passages,
queries), `world` (entities and their facts), `corpus` (passages per fact
and their text), `assemble` (`generate`), `output` (the files and counts)
and `cli` (the `trak-jax-heldout-facts` binary).
"""

from trak_jax.eval.heldout_facts.assemble import generate
from trak_jax.eval.heldout_facts.cli import main
from trak_jax.eval.heldout_facts.config import (
  HeldoutFactsConfig,
  bucket_label,
  bucket_labels,
  bucket_of,
)
from trak_jax.eval.heldout_facts.output import summary, write_jsonl
from trak_jax.eval.heldout_facts.records import (
  Fact,
  FactQuery,
  HeldoutFacts,
  Passage,
)
from trak_jax.eval.heldout_facts.templates import (
  CORPUS_TEMPLATES,
  QUERY_TEMPLATES,
  RELATIONS,
)

__all__ = [
  "CORPUS_TEMPLATES",
  "QUERY_TEMPLATES",
  "RELATIONS",
  "Fact",
  "FactQuery",
  "HeldoutFacts",
  "HeldoutFactsConfig",
  "Passage",
  "bucket_label",
  "bucket_labels",
  "bucket_of",
  "generate",
  "main",
  "summary",
  "write_jsonl",
]
