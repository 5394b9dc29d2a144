"""retrieve's metrics.json and evaluate's results through the one metric
summary (`trak_jax.eval.metrics.summarize`), on hand-made report records."""

import numpy as np
import pytest

from pipelines import evaluate_influence, evaluate_tables, retrieve_lib
from trak_jax.eval import metrics as metrics_lib

_FILLER = [f"x{i}" for i in range(10)]


def _record(query_id, relevant_ids, ranked, *, correct=True):
  """Two methods: "a" ranks `ranked`, "b" finds nothing."""

  def result(ids):
    return {
      "reciprocal_rank": metrics_lib.reciprocal_rank(ids, relevant_ids),
      "proponents": [{"id": i} for i in ids],
    }

  return {
    "query_id": query_id,
    "relevant_ids": relevant_ids,
    "correct": correct,
    "results": {"a": result(ranked), "b": result(_FILLER)},
  }


RECORDS = [
  _record("q0", ["r1"], ["r1", *_FILLER[:9]]),  # rank 1
  _record("q1", ["r1"], [*_FILLER[:4], "r1", *_FILLER[4:9]], correct=False),
  _record("q2", [], ["r1", *_FILLER[:9]]),  # no relevant ids
]


def test_retrieval_metrics_at_10_keep_metrics_json_keys():
  summary = retrieve_lib.retrieval_metrics(RECORDS)
  assert set(summary) == {
    "queries",
    "graded_queries",
    "a",
    "b",
    "model_accuracy",
  }
  assert (summary["queries"], summary["graded_queries"]) == (3, 2)
  assert summary["model_accuracy"] == pytest.approx(2 / 3)
  assert set(summary["a"]) == {"mrr", "recall@10", "precision@10"}
  # Only the two queries with relevant ids are scored.
  assert summary["a"]["mrr"]["n"] == 2
  assert summary["a"]["mrr"]["mean"] == pytest.approx((1 + 1 / 5) / 2)
  assert summary["a"]["recall@10"]["mean"] == 1.0
  assert set(summary["a"]["mrr"]) == {"mean", "low", "high", "n"}


def test_retrieval_metrics_at_3():
  summary = retrieve_lib.retrieval_metrics(RECORDS, k=3)
  assert set(summary["a"]) == {"mrr", "recall@3", "precision@3"}
  assert summary["a"]["mrr"]["mean"] == pytest.approx(0.5)  # rank 5 is 0
  assert summary["a"]["recall@3"]["mean"] == pytest.approx(0.5)


def test_evaluation_counts_every_query_and_groups():
  tail = {
    "a": {"tail_patch": np.array([0.5, np.nan, np.nan])},
    evaluate_influence.GROUND_TRUTH: {
      "tail_patch": np.array([1.0, 2.0, np.nan])
    },
  }
  table = evaluate_tables.per_query_metrics(RECORDS, ["a", "b"], tail, k=10)
  assert list(table) == ["a", "b", evaluate_influence.GROUND_TRUTH]
  assert list(table["b"]) == ["mrr", "recall@10", "precision@10", "tail_patch"]
  assert list(table[evaluate_influence.GROUND_TRUTH]) == ["tail_patch"]
  groups = {
    "all": np.ones(3, bool),
    "model_correct": np.array([True, False, True]),
  }
  summary = metrics_lib.summarize(table, groups=groups)
  # The evaluation scores a query without relevant ids as 0.
  assert summary["all"]["a"]["mrr"]["n"] == 3
  assert summary["all"]["a"]["mrr"]["mean"] == pytest.approx((1 + 0.2) / 3)
  assert summary["model_correct"]["a"]["mrr"]["mean"] == pytest.approx(0.5)
  assert summary["all"]["b"]["tail_patch"]["n"] == 0
  assert summary["all"][evaluate_influence.GROUND_TRUTH]["tail_patch"]["n"] == 2


def test_results_table_names_its_columns_by_k():
  assert evaluate_tables.METRICS == evaluate_tables.result_metrics(10)
  assert evaluate_tables.METRICS[:3] == ("mrr", "recall@10", "precision@10")
  assert evaluate_tables.result_metrics(3)[:3] == (
    "mrr",
    "recall@3",
    "precision@3",
  )
