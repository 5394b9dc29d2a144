"""FactBench as a TFDS dataset, built offline from the seeded generator.

    import tensorflow_datasets as tfds
    from trak_jax.eval import factbench_tfds  # Registers "fact_bench".

    builder = tfds.builder("fact_bench/tiny", data_dir="/tmp/tfds")
    builder.download_and_prepare()
    corpus = builder.as_dataset(split="corpus")
    queries = builder.as_dataset(split="queries")

TFDS gives a data set one feature spec for all its splits, so every example
carries the union of the corpus and query fields (DESIGN.md section 4): a
corpus example has `id`, `text`, `fact_ids` and empty query fields; a query
has `id`, `prompt`, `target`, `relevant_ids`, `fact_id`, `relation`,
`subject`, `object`, `frequency_bucket` and an empty `text` and `fact_ids`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import tensorflow_datasets as tfds

from trak_jax.eval import factbench

_STRING_FIELDS = (
  "id",
  "text",
  "prompt",
  "target",
  "fact_id",
  "relation",
  "subject",
  "object",
  "frequency_bucket",
)
_LIST_FIELDS = ("fact_ids", "relevant_ids")


@dataclasses.dataclass(eq=False)
class FactBenchBuilderConfig(tfds.core.BuilderConfig):
  """A TFDS config holding the generator's config."""

  factbench_config: factbench.FactBenchConfig = dataclasses.field(
    default_factory=factbench.FactBenchConfig
  )


def _empty_example() -> dict:
  example: dict = {name: "" for name in _STRING_FIELDS}
  example.update({name: [] for name in _LIST_FIELDS})
  return example


def _corpus_example(passage: factbench.Passage) -> dict:
  example = _empty_example()
  example.update(id=passage.id, text=passage.text)
  example["fact_ids"] = list(passage.fact_ids)
  return example


def _query_example(query: factbench.FactQuery) -> dict:
  example = _empty_example()
  for name, value in dataclasses.asdict(query).items():
    example[name] = list(value) if name in _LIST_FIELDS else value
  return example


class FactBench(tfds.core.GeneratorBasedBuilder):
  """FactBench: seeded fact-tracing corpus and cloze queries."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
    FactBenchBuilderConfig(
      name="tiny",
      description="About 150 passages and 30 queries, for tests.",
      factbench_config=factbench.FactBenchConfig.tiny(),
    ),
    FactBenchBuilderConfig(
      name="demo",
      description="A few thousand passages and a few hundred queries.",
      factbench_config=factbench.FactBenchConfig.demo(),
    ),
  ]
  DEFAULT_CONFIG_NAME = "tiny"

  def _info(self) -> tfds.core.DatasetInfo:
    features = {name: tfds.features.Text() for name in _STRING_FIELDS}
    for name in _LIST_FIELDS:
      features[name] = tfds.features.Sequence(tfds.features.Text())
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(features),
      description=(
        "Fact tracing: corpus passages stating (subject, relation, object) "
        "facts, and cloze queries whose relevant_ids are exactly the "
        "passages stating their fact. "
        f"Config: {self.builder_config.factbench_config.to_json()}"
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything is generated locally; nothing is downloaded.
    bench = factbench.generate(self.builder_config.factbench_config)
    return {
      "corpus": self._generate_examples(
        [_corpus_example(passage) for passage in bench.passages]
      ),
      "queries": self._generate_examples(
        [_query_example(query) for query in bench.queries]
      ),
    }

  def _generate_examples(self, examples: list[dict]) -> Iterator:
    for example in examples:
      yield example["id"], example
