"""Tests for the BM25 baseline on a small hand-made corpus."""

import os
import subprocess
import sys

import numpy as np
import pytest

from trak_jax.eval import bm25, factbench

CORPUS = {
  "p0": "The weather in the old town was pleasant all week.",
  "p1": "Oslo is the capital city of Norway, on the Oslofjord.",
  "p2": "Paris is the capital city of France.",
  "p3": "The capital city hosts the national parliament.",
  "p4": "A small bakery drew a large crowd in the morning.",
  "p5": "The river runs north past the mountain lake.",
}


@pytest.fixture(scope="module")
def index():
  return bm25.Bm25Index.build(list(CORPUS), list(CORPUS.values()))


def test_passage_sharing_rare_words_ranks_first(index):
  ids, scores = index.search(["The capital of Norway is Oslo"], k=3)
  assert ids[0][0] == "p1"
  # "capital" alone (common in the corpus) ranks below both rare words.
  assert scores[0, 0] > scores[0, 1] > 0


def test_fact_query_is_prompt_plus_target(index):
  query = factbench.FactQuery(
    id="q0",
    prompt="The capital of France is",
    target=" Paris",
    relevant_ids=("p2",),
    fact_id="f0",
    relation="capital",
    subject="France",
    object="Paris",
    frequency_bucket="1",
  )
  assert bm25.query_text(query) == "The capital of France is Paris"
  ids, _ = index.search_queries([query], k=1)
  assert ids == [["p2"]]


def test_scores_are_descending(index):
  queries = ["national parliament", "river mountain", "bakery morning crowd"]
  ids, scores = index.search(queries, k=len(CORPUS))
  assert scores.shape == (3, len(CORPUS))
  assert np.all(np.diff(scores, axis=1) <= 0)
  assert [row[0] for row in ids] == ["p3", "p5", "p4"]


def test_k_larger_than_corpus_returns_every_passage(index):
  ids, scores = index.search(["capital", "Oslo"], k=100)
  assert scores.shape == (2, len(CORPUS))
  for row in ids:
    assert sorted(row) == sorted(CORPUS)


def test_k_zero_and_negative(index):
  ids, scores = index.search(["capital"], k=0)
  assert ids == [[]] and scores.shape == (1, 0)
  with pytest.raises(ValueError, match="k must be"):
    index.search(["capital"], k=-1)


def test_ties_are_ordered_by_corpus_position(index):
  # No query word is in the corpus: every score ties at 0.
  ids, scores = index.search(["zebra xylophone", "the of"], k=4)
  assert ids == [["p0", "p1", "p2", "p3"]] * 2
  assert not scores.any()
  # Two passages match; the four that do not follow in corpus order.
  ids, scores = index.search(["Oslofjord parliament"], k=6)
  assert ids[0][2:] == ["p0", "p2", "p4", "p5"]


def test_search_is_deterministic(index):
  queries = ["capital city of Norway", "old town", "lake north"]
  again = bm25.Bm25Index.build(list(CORPUS), list(CORPUS.values()))
  first = index.search(queries, k=4)
  for ids, scores in (index.search(queries, k=4), again.search(queries, k=4)):
    assert ids == first[0]
    np.testing.assert_array_equal(scores, first[1])


def test_same_ranking_in_another_process(index):
  # String hashing differs between processes; rankings must not.
  code = (
    "from trak_jax.eval import bm25; from tests.eval import test_bm25 as t;"
    "i = bm25.Bm25Index.build(list(t.CORPUS), list(t.CORPUS.values()));"
    "print(i.search(['capital city of Norway', 'the old river'], k=6)[0])"
  )
  run = subprocess.run(
    [sys.executable, "-c", code],
    env=dict(os.environ, PYTHONHASHSEED="7"),
    cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    capture_output=True,
    text=True,
    check=True,
  )
  expected = index.search(["capital city of Norway", "the old river"], k=6)[0]
  assert run.stdout.strip() == str(expected)


def test_build_rejects_bad_corpora():
  with pytest.raises(ValueError, match="ids but"):
    bm25.Bm25Index.build(["a"], ["x", "y"])
  with pytest.raises(ValueError, match="empty"):
    bm25.Bm25Index.build([], [])
  with pytest.raises(ValueError, match="unique"):
    bm25.Bm25Index.build(["a", "a"], ["x", "y"])
