"""Tests for the held-out facts generator."""

import collections
import json
import os
import re
import subprocess
import sys

import pytest

from trak_jax import data
from trak_jax.eval import factbench, heldout_facts
from trak_jax.eval.heldout_facts import world

_FILES = ("corpus.jsonl", "queries.jsonl", "facts.jsonl", "config.json")


@pytest.fixture(scope="module")
def tiny():
  return heldout_facts.generate(heldout_facts.HeldoutFactsConfig.tiny())


@pytest.fixture(scope="module")
def demo():
  return heldout_facts.generate(heldout_facts.HeldoutFactsConfig.demo())


def _read_files(directory):
  return {name: (directory / name).read_bytes() for name in _FILES}


def _renderings(fact):
  """Every corpus sentence that states `fact`."""
  return [
    template.format(s=fact.subject, o=fact.object)
    for template in heldout_facts.CORPUS_TEMPLATES[fact.relation]
  ]


def _skeleton(template):
  """A template with its placeholders blanked, lowercased."""
  return re.sub(r"\{[a-z]\}", "{}", template).lower()


def _all_templates(module):
  return [
    template
    for table in (module.CORPUS_TEMPLATES, module.QUERY_TEMPLATES)
    for templates in table.values()
    for template in templates
  ]


def test_same_seed_gives_identical_files(tmp_path):
  config = heldout_facts.HeldoutFactsConfig.tiny(seed=7)
  heldout_facts.write_jsonl(heldout_facts.generate(config), str(tmp_path / "a"))
  heldout_facts.write_jsonl(heldout_facts.generate(config), str(tmp_path / "b"))
  assert _read_files(tmp_path / "a") == _read_files(tmp_path / "b")


def test_cli_in_fresh_process_writes_identical_files(tmp_path, tiny):
  # Another process with another string-hash seed must write the same bytes.
  heldout_facts.write_jsonl(tiny, str(tmp_path / "here"))
  env = dict(os.environ, PYTHONHASHSEED="123")
  code = "from trak_jax.eval import heldout_facts; heldout_facts.main()"
  args = ["--output_dir", str(tmp_path / "there"), "--preset", "tiny"]
  run = subprocess.run(
    [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
  )
  assert run.returncode == 0, run.stderr
  printed = json.loads(run.stdout)
  assert printed["passages"] == len(tiny.passages)
  assert printed["queries"] == len(tiny.queries)
  assert _read_files(tmp_path / "here") == _read_files(tmp_path / "there")


def test_different_seeds_differ(tiny):
  config = heldout_facts.HeldoutFactsConfig.tiny(seed=1)
  other = heldout_facts.generate(config)
  assert [p.text for p in other.passages] != [p.text for p in tiny.passages]
  assert {f.subject for f in other.facts} != {f.subject for f in tiny.facts}


def test_files_read_back_with_trak_jax_data(tmp_path, tiny):
  paths = heldout_facts.write_jsonl(tiny, str(tmp_path))
  corpus = list(data.read_corpus(paths["corpus.jsonl"]))
  assert [(e.id, e.text) for e in corpus] == [
    (p.id, p.text) for p in tiny.passages
  ]
  queries = data.read_queries(paths["queries.jsonl"])
  assert len(queries) == len(tiny.queries)
  for read, query in zip(queries, tiny.queries, strict=True):
    assert (read.id, read.prompt, read.target) == (
      query.id,
      query.prompt,
      query.target,
    )
    assert read.relevant_ids == query.relevant_ids
    assert read.fact_id == query.fact_id
    assert read.extra == {
      "relation": query.relation,
      "subject": query.subject,
      "object": query.object,
      "mentions": query.mentions,
    }
  records = [json.loads(line) for line in open(paths["corpus.jsonl"])]
  assert all(set(r) == {"id", "text", "fact_ids"} for r in records)
  facts = [json.loads(line) for line in open(paths["facts.jsonl"])]
  assert len(facts) == len(tiny.facts)
  config = json.loads(open(paths["config.json"]).read())
  assert config["seed"] == tiny.config.seed


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
    assert query.target == " " + query.object
    assert (query.subject, query.relation, query.object) == (
      fact.subject,
      fact.relation,
      fact.object,
    )
    for passage_id in query.relevant_ids:
      text = texts[passage_id]
      assert fact.subject in text and fact.object in text
      assert any(sentence in text for sentence in _renderings(fact)), text


def test_mention_buckets_match_counts(demo):
  labels = heldout_facts.bucket_labels(demo.config.buckets)
  assert labels == ["1", "2-3", "4-8", "9+"]
  ranges = dict(zip(labels, demo.config.buckets, strict=True))
  counts = collections.Counter(
    fact_id for passage in demo.passages for fact_id in passage.fact_ids
  )
  for fact in demo.facts:
    lo, hi = ranges[fact.mentions]
    assert fact.num_passages == counts[fact.fact_id] == len(fact.passage_ids)
    assert lo <= fact.num_passages <= hi
  facts = {fact.fact_id: fact for fact in demo.facts}
  for query in demo.queries:
    assert query.mentions == facts[query.fact_id].mentions
    lo, hi = ranges[query.mentions]
    assert lo <= len(query.relevant_ids) <= hi


def test_mentions_are_zipf_like(demo):
  queried = {query.fact_id for query in demo.queries}
  counts = collections.Counter(
    fact.num_passages for fact in demo.facts if fact.fact_id not in queried
  )
  assert max(counts) <= demo.config.max_mentions
  assert counts[1] > counts[2] > counts[4] > counts[8] > counts[16]


def test_query_prompts_never_occur_in_corpus(demo):
  corpus = [passage.text for passage in demo.passages]
  for query in demo.queries:
    assert not any(query.prompt in text for text in corpus), query.prompt
    assert query.prompt == query.prompt.rstrip()


def test_a_prompt_seen_in_the_corpus_is_rejected(monkeypatch):
  seen = ("The {s} tribe forges its blades from",)
  monkeypatch.setitem(heldout_facts.QUERY_TEMPLATES, "tribe_metal", seen)
  with pytest.raises(ValueError, match="occurs in the corpus"):
    heldout_facts.generate(heldout_facts.HeldoutFactsConfig.tiny())


def test_query_templates_differ_from_corpus_templates():
  assert set(heldout_facts.QUERY_TEMPLATES) == set(heldout_facts.RELATIONS)
  corpus = "\n".join(
    t for ts in heldout_facts.CORPUS_TEMPLATES.values() for t in ts
  )
  for templates in heldout_facts.QUERY_TEMPLATES.values():
    for template in templates:
      assert template not in corpus
      assert "{s}" in template and "{o}" not in template
      assert template[-1].isalpha()


def test_nothing_shared_with_factbench():
  assert len(heldout_facts.RELATIONS) == 8
  assert not set(heldout_facts.RELATIONS) & set(factbench.RELATIONS)
  ours = {_skeleton(t) for t in _all_templates(heldout_facts)}
  theirs = {_skeleton(t) for t in _all_templates(factbench)}
  assert not ours & theirs
  for relation in heldout_facts.RELATIONS:
    assert len(set(heldout_facts.CORPUS_TEMPLATES[relation])) == 5


def test_passages_mix_facts_and_stay_short(demo):
  config = demo.config
  kinds = collections.Counter(passage.kind for passage in demo.passages)
  assert kinds["filler"] == config.num_filler_passages
  sizes = collections.Counter()
  for passage in demo.passages:
    assert len(passage.text) <= config.max_passage_chars
    assert (passage.kind == "fact") == bool(passage.fact_ids)
    assert len(set(passage.fact_ids)) == len(passage.fact_ids) <= 3
    sizes[len(passage.fact_ids)] += passage.kind == "fact"
  assert sizes[1] and sizes[2] and sizes[3]
  names = {f.subject for f in demo.facts} | {f.object for f in demo.facts}
  names -= set(world._METALS) | set(world._INSTRUMENTS)
  pattern = re.compile("|".join(rf"\b{re.escape(n)}\b" for n in names))
  for passage in demo.passages:
    if passage.kind == "filler":
      assert not pattern.search(passage.text), passage.text


def test_word_overlap_alone_does_not_find_the_stating_passages(demo):
  # Near misses and distractors name a queried fact's subject and object
  # without stating it.
  fooled = 0
  for query in demo.queries:
    relevant = set(query.relevant_ids)
    fooled += any(
      query.subject in p.text and query.object in p.text
      for p in demo.passages
      if p.id not in relevant
    )
  assert fooled >= demo.config.near_miss_fraction * len(demo.queries)


def test_object_pools_vary_in_size(demo):
  objects = collections.defaultdict(set)
  for fact in demo.facts:
    objects[fact.relation].add(fact.object)
  assert len(objects["tribe_metal"]) <= 12
  assert len(objects["composer_instrument"]) <= 10
  assert len(objects["mentor"]) > 50


def test_demo_and_tiny_sizes(demo, tiny):
  counts = heldout_facts.summary(demo)
  assert 3000 <= counts["passages"] <= 4000
  assert counts["queries"] == 400
  assert set(counts["queries_per_bucket"].values()) == {100}
  assert all(counts["queries_per_relation"].values())
  assert counts["max_passage_chars"] <= 247  # FactBench demo's longest.
  assert 100 <= len(tiny.passages) <= 400
  assert len(tiny.queries) == 32


def test_config_rejects_gapped_buckets():
  with pytest.raises(ValueError, match="contiguous"):
    heldout_facts.HeldoutFactsConfig(
      buckets=((1, 1), (3, 20)), query_bucket_weights=(1, 1)
    )
