"""Tests for the FactBench generator and its TFDS builder."""

import collections
import json
import os
import re
import subprocess
import sys

import pytest

from trak_jax.eval import factbench

_FILES = ("corpus.jsonl", "queries.jsonl", "facts.jsonl", "config.json")


@pytest.fixture(scope="module")
def tiny():
  return factbench.generate(factbench.FactBenchConfig.tiny())


@pytest.fixture(scope="module")
def demo():
  return factbench.generate(factbench.FactBenchConfig.demo())


def _read_files(directory):
  return {name: (directory / name).read_bytes() for name in _FILES}


def _renderings(fact):
  """Every corpus sentence that states `fact`."""
  article = "an" if fact.object[0].lower() in "aeiou" else "a"
  return [
    template.format(s=fact.subject, o=fact.object, a=article)
    for template in factbench.CORPUS_TEMPLATES[fact.relation]
  ]


def test_same_seed_gives_identical_files(tmp_path):
  config = factbench.FactBenchConfig.tiny(seed=7)
  factbench.write_jsonl(factbench.generate(config), str(tmp_path / "a"))
  factbench.write_jsonl(factbench.generate(config), str(tmp_path / "b"))
  assert _read_files(tmp_path / "a") == _read_files(tmp_path / "b")


def test_cli_in_fresh_process_writes_identical_files(tmp_path, tiny):
  # Another process with another string-hash seed must write the same bytes.
  factbench.write_jsonl(tiny, str(tmp_path / "here"))
  env = dict(os.environ, PYTHONHASHSEED="123")
  code = "from trak_jax.eval import factbench; factbench.main()"
  args = ["--output_dir", str(tmp_path / "there"), "--preset", "tiny"]
  run = subprocess.run(
    [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
  )
  assert run.returncode == 0, run.stderr
  assert json.loads(run.stdout)["passages"] == len(tiny.passages)
  assert _read_files(tmp_path / "here") == _read_files(tmp_path / "there")


def test_different_seeds_differ(tiny):
  other = factbench.generate(factbench.FactBenchConfig.tiny(seed=1))
  assert [p.text for p in other.passages] != [p.text for p in tiny.passages]
  assert {f.subject for f in other.facts} != {f.subject for f in tiny.facts}


def test_at_least_eight_relations_with_five_corpus_templates():
  assert len(factbench.RELATIONS) >= 8
  assert set(factbench.QUERY_TEMPLATES) == set(factbench.RELATIONS)
  for relation in factbench.RELATIONS:
    templates = factbench.CORPUS_TEMPLATES[relation]
    assert len(set(templates)) >= 5, relation
    for query_template in factbench.QUERY_TEMPLATES[relation]:
      # A cloze prompt: the object continues it after a space.
      assert query_template[-1].isalpha() or query_template.endswith("{a}")
      assert "{s}" in query_template
      assert "{o}" not in query_template


@pytest.mark.parametrize("bench_name", ["tiny", "demo"])
def test_relevant_ids_are_exactly_the_stating_passages(bench_name, request):
  bench = request.getfixturevalue(bench_name)
  facts = {fact.fact_id: fact for fact in bench.facts}
  texts = {passage.id: passage.text for passage in bench.passages}
  stating = collections.defaultdict(list)
  for passage in bench.passages:
    for fact_id in passage.fact_ids:
      stating[fact_id].append(passage.id)
  for query in bench.queries:
    fact = facts[query.fact_id]
    assert query.relevant_ids
    assert list(query.relevant_ids) == sorted(stating[query.fact_id])
    assert (query.subject, query.relation, query.object) == (
      fact.subject,
      fact.relation,
      fact.object,
    )
    for passage_id in query.relevant_ids:
      text = texts[passage_id]
      assert fact.subject in text and fact.object in text
      assert any(sentence in text for sentence in _renderings(fact)), text


def test_every_fact_passage_renders_its_facts(tiny):
  facts = {fact.fact_id: fact for fact in tiny.facts}
  for passage in tiny.passages:
    for fact_id in passage.fact_ids:
      rendered = _renderings(facts[fact_id])
      assert any(sentence in passage.text for sentence in rendered)


def test_query_prompts_never_occur_in_corpus(demo):
  corpus = [passage.text for passage in demo.passages]
  for query in demo.queries:
    assert not any(query.prompt in text for text in corpus), query.prompt
    assert query.target == " " + query.object
    assert query.prompt == query.prompt.rstrip()


def test_passage_counts_lie_in_their_buckets(demo):
  buckets = {factbench.bucket_label(b): b for b in demo.config.buckets}
  counts = collections.Counter(
    fact_id for passage in demo.passages for fact_id in passage.fact_ids
  )
  for fact in demo.facts:
    lo, hi = buckets[fact.frequency_bucket]
    assert fact.num_passages == counts[fact.fact_id] == len(fact.passage_ids)
    assert lo <= fact.num_passages <= hi
  facts = {fact.fact_id: fact for fact in demo.facts}
  for query in demo.queries:
    assert query.frequency_bucket == facts[query.fact_id].frequency_bucket


def test_passages_state_one_to_three_facts(tiny):
  config = tiny.config
  filler = [p for p in tiny.passages if not p.fact_ids]
  assert len(filler) == config.num_filler_passages
  for passage in tiny.passages:
    if passage.fact_ids:
      assert 1 <= len(passage.fact_ids) <= 3
      assert len(set(passage.fact_ids)) == len(passage.fact_ids)
  names = {f.subject for f in tiny.facts} | {f.object for f in tiny.facts}
  pattern = re.compile("|".join(rf"\b{re.escape(n)}\b" for n in names))
  for passage in filler:
    assert not pattern.search(passage.text), passage.text


def test_queries_have_distractor_passages(demo):
  facts = {fact.fact_id: fact for fact in demo.facts}
  by_subject = collections.defaultdict(set)
  by_relation = collections.defaultdict(set)
  for passage in demo.passages:
    for fact_id in passage.fact_ids:
      fact = facts[fact_id]
      by_subject[fact.subject].add((passage.id, fact.relation))
      by_relation[fact.relation].add((passage.id, fact.subject))
  multi_relation = 0
  for query in demo.queries:
    relevant = set(query.relevant_ids)
    same_relation = {
      pid
      for pid, subject in by_relation[query.relation]
      if subject != query.subject
    }
    assert same_relation - relevant, query
    relations = {relation for _, relation in by_subject[query.subject]}
    if len(relations) > 1:
      multi_relation += 1
      same_subject = {pid for pid, _ in by_subject[query.subject]} - relevant
      assert same_subject, query
  assert multi_relation > len(demo.queries) // 2


def test_demo_size_and_bucket_balance(demo):
  summary = factbench.summary(demo)
  assert 2000 <= summary["passages"] <= 4000
  assert 300 <= summary["queries"] <= 500
  assert len(set(summary["queries_per_bucket"].values())) == 1
  subjects = [(f.subject, f.relation) for f in demo.facts]
  assert len(subjects) == len(set(subjects))
  assert len({f.relation for f in demo.facts}) == len(factbench.RELATIONS)


def test_tiny_size(tiny):
  assert 100 <= len(tiny.passages) <= 200
  assert len(tiny.queries) == 30


def test_config_rejects_gapped_buckets():
  with pytest.raises(ValueError, match="contiguous"):
    factbench.FactBenchConfig(buckets=((1, 1), (3, 4)), bucket_weights=(1, 1))


def test_tfds_builder_builds_tiny_offline(tmp_path, tiny):
  tfds = pytest.importorskip("tensorflow_datasets")
  from trak_jax.eval import factbench_tfds  # noqa: F401  Registers the builder.

  builder = tfds.builder("fact_bench/tiny", data_dir=str(tmp_path))
  builder.download_and_prepare()
  corpus = {
    ex["id"].decode(): ex["text"].decode()
    for ex in tfds.as_numpy(builder.as_dataset(split="corpus"))
  }
  assert corpus == {p.id: p.text for p in tiny.passages}
  queries = {
    ex["id"].decode(): (
      ex["prompt"].decode(),
      ex["target"].decode(),
      [pid.decode() for pid in ex["relevant_ids"]],
    )
    for ex in tfds.as_numpy(builder.as_dataset(split="queries"))
  }
  assert queries == {
    q.id: (q.prompt, q.target, list(q.relevant_ids)) for q in tiny.queries
  }
  downloaded = [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]
  assert not downloaded
