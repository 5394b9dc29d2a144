"""Tests for the closed-set attribution metrics on hand-made rankings."""

import numpy as np
import pytest

from trak_jax.eval import metrics

_FILLER = [f"x{i}" for i in range(20)]

# Each ranked list is the top 11 of a retrieval; relevant ids start with "r".
RANKINGS = [
  ["r1", "r2", *_FILLER[:9]],  # relevant at ranks 1 and 2
  ["x0", "x1", "r1", *_FILLER[2:10]],  # first relevant at rank 3
  _FILLER[:11],  # nothing relevant
  [*_FILLER[:10], "r1"],  # relevant only at rank 11
]
RELEVANT = [["r1", "r2"], ["r1"], ["r1"], ["r1"]]


@pytest.mark.parametrize(
  "ranking, relevant, expected",
  [
    (RANKINGS[0], RELEVANT[0], 1.0),
    (RANKINGS[1], RELEVANT[1], 1 / 3),
    (RANKINGS[2], RELEVANT[2], 0.0),
    (RANKINGS[3], RELEVANT[3], 1 / 11),
    ([], ["r1"], 0.0),
  ],
)
def test_reciprocal_rank(ranking, relevant, expected):
  assert metrics.reciprocal_rank(ranking, relevant) == pytest.approx(expected)


@pytest.mark.parametrize(
  "ranking, relevant, hit, precision",
  [
    (RANKINGS[0], RELEVANT[0], 1.0, 0.2),
    (RANKINGS[1], RELEVANT[1], 1.0, 0.1),
    (RANKINGS[2], RELEVANT[2], 0.0, 0.0),
    (RANKINGS[3], RELEVANT[3], 0.0, 0.0),  # rank 11 is outside the top 10
  ],
)
def test_hit_and_precision_at_10(ranking, relevant, hit, precision):
  assert metrics.hit_at_k(ranking, relevant, k=10) == hit
  assert metrics.precision_at_k(ranking, relevant, k=10) == pytest.approx(
    precision
  )


def test_precision_divides_by_k_for_short_lists():
  assert metrics.precision_at_k(["r1"], ["r1"], k=10) == pytest.approx(0.1)


def test_per_query_matches_hand_computed_values():
  values = metrics.per_query(RANKINGS, RELEVANT, k=10)
  assert set(values) == {"mrr", "recall@10", "precision@10"}
  # MRR@10: the relevant id at rank 11 counts 0.
  np.testing.assert_allclose(values["mrr"], [1.0, 1 / 3, 0.0, 0.0])
  np.testing.assert_array_equal(values["recall@10"], [1.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(values["precision@10"], [0.2, 0.1, 0.0, 0.0])
  assert values["mrr"].mean() == pytest.approx((1 + 1 / 3) / 4)
  assert values["recall@10"].mean() == pytest.approx(0.5)


def test_per_query_mrr_reaches_as_far_as_k():
  values = metrics.per_query(RANKINGS, RELEVANT, k=11)
  np.testing.assert_allclose(values["mrr"], [1.0, 1 / 3, 0.0, 1 / 11])
  np.testing.assert_array_equal(values["recall@11"], [1.0, 1.0, 0.0, 1.0])


def test_per_query_other_k_names_its_keys():
  values = metrics.per_query(RANKINGS, RELEVANT, k=1)
  np.testing.assert_array_equal(values["recall@1"], [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(values["precision@1"], [1.0, 0.0, 0.0, 0.0])


def test_per_query_rejects_mismatched_lengths():
  with pytest.raises(ValueError):
    metrics.per_query(RANKINGS, RELEVANT[:2])


def _samples(n, seed=1):
  return np.random.default_rng(seed).uniform(0.0, 1.0, n)


def test_bootstrap_interval_contains_the_mean():
  values = _samples(50)
  low, high = metrics.bootstrap_interval(values, seed=0)
  assert low < values.mean() < high


def test_bootstrap_interval_shrinks_with_more_data():
  low_small, high_small = metrics.bootstrap_interval(_samples(20), seed=0)
  low_large, high_large = metrics.bootstrap_interval(_samples(2000), seed=0)
  assert high_large - low_large < (high_small - low_small) / 4


def test_bootstrap_interval_is_deterministic_for_a_seed():
  values = _samples(30)
  first = metrics.bootstrap_interval(values, seed=3)
  assert metrics.bootstrap_interval(values, seed=3) == first
  assert metrics.bootstrap_interval(values, seed=4) != first


def test_bootstrap_interval_of_constant_data_has_zero_width():
  low, high = metrics.bootstrap_interval(np.full(25, 0.375), seed=0)
  assert low == high == pytest.approx(0.375)


def test_wider_confidence_gives_wider_interval():
  values = _samples(40)
  low_90, high_90 = metrics.bootstrap_interval(values, confidence=0.9)
  low_99, high_99 = metrics.bootstrap_interval(values, confidence=0.99)
  assert low_99 <= low_90 and high_90 <= high_99
  assert high_99 - low_99 > high_90 - low_90


def test_bootstrap_interval_of_nothing_is_nan():
  assert all(np.isnan(metrics.bootstrap_interval(np.array([]))))


def test_mean_interval():
  values = metrics.per_query(RANKINGS, RELEVANT)["mrr"]
  summary = metrics.mean_interval(values, seed=0)
  assert summary["n"] == 4
  assert summary["mean"] == pytest.approx(values.mean())
  assert summary["low"] <= summary["mean"] <= summary["high"]
  assert (summary["low"], summary["high"]) == metrics.bootstrap_interval(
    values, seed=0
  )


# --- the metric summary over report records --------------------------------


def _record(query_id, relevant_ids, results, **fields):
  """A report.jsonl record; `results` maps method -> ranked ids."""
  wanted = set(relevant_ids)
  return {
    "query_id": query_id,
    "relevant_ids": list(relevant_ids),
    "results": {
      method: {
        "reciprocal_rank": metrics.reciprocal_rank(ranked, relevant_ids),
        "proponents": [
          {"rank": rank, "id": i, "relevant": i in wanted}
          for rank, i in enumerate(ranked, start=1)
        ],
      }
      for method, ranked in results.items()
    },
    **fields,
  }


def _records():
  """Ten proponents each; the "a" method finds rank 1, 4, 10 or nothing."""
  return [
    _record("q0", ["r1"], {"a": ["r1", *_FILLER[:9]], "b": _FILLER[:10]}),
    _record("q1", ["r1"], {"a": [*_FILLER[:3], "r1", *_FILLER[3:9]]}),
    _record("q2", ["r1", "r2"], {"a": [*_FILLER[:9], "r2"], "b": _FILLER[:10]}),
    _record("q3", ["r1"], {"a": _FILLER[:10], "b": ["r1", *_FILLER[:9]]}),
  ]


def test_ranking_table_at_10_and_3():
  records = _records()
  at_10 = metrics.ranking_table(records, ["a", "b"], k=10)
  assert set(at_10["a"]) == {"mrr", "recall@10", "precision@10"}
  np.testing.assert_allclose(at_10["a"]["mrr"], [1.0, 0.25, 0.1, 0.0])
  np.testing.assert_array_equal(at_10["a"]["recall@10"], [1, 1, 1, 0])
  np.testing.assert_allclose(at_10["a"]["precision@10"], [0.1, 0.1, 0.1, 0])
  # q1 has no result for "b": not measured.
  np.testing.assert_array_equal(at_10["b"]["mrr"], [0.0, np.nan, 0.0, 1.0])
  at_3 = metrics.ranking_table(records, ["a"], k=3)
  assert set(at_3["a"]) == {"mrr", "recall@3", "precision@3"}
  # Ranks 4 and 10 are past k = 3: MRR@3 counts them 0.
  np.testing.assert_allclose(at_3["a"]["mrr"], [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(at_3["a"]["recall@3"], [1, 0, 0, 0])
  np.testing.assert_allclose(at_3["a"]["precision@3"], [1 / 3, 0, 0, 0])


def test_ranking_table_agrees_with_per_query():
  records = _records()
  rankings = [
    [p["id"] for p in r["results"]["a"]["proponents"]] for r in records
  ]
  relevant = [r["relevant_ids"] for r in records]
  for k in (1, 3, 10):
    table = metrics.ranking_table(records, ["a"], k=k)["a"]
    expected = metrics.per_query(rankings, relevant, k=k)
    assert table.keys() == expected.keys()
    for name, values in expected.items():
      np.testing.assert_array_equal(table[name], values, err_msg=name)


def test_a_query_without_relevant_ids_scores_zero():
  records = [*_records(), _record("q4", [], {"a": ["r1", *_FILLER[:9]]})]
  table = metrics.ranking_table(records, ["a"], k=10)
  assert [v[-1] for v in table["a"].values()] == [0.0, 0.0, 0.0]
  summary = metrics.summarize(table)["all"]["a"]
  assert summary["mrr"]["n"] == 5
  assert summary["mrr"]["mean"] == pytest.approx((1 + 0.25 + 0.1) / 5)


def test_summarize_per_group_method_and_metric():
  records = _records()
  table = metrics.ranking_table(records, ["a", "b"], k=10)
  table["a"]["tail_patch"] = np.array([0.5, np.nan, 1.5, np.nan])
  groups = {
    "all": np.ones(4, bool),
    "bucket=low": np.array([True, True, False, False]),
    "none": np.zeros(4, bool),
  }
  summary = metrics.summarize(table, groups=groups)
  assert list(summary) == list(groups)
  overall = summary["all"]
  assert overall["a"]["mrr"]["mean"] == pytest.approx(1.35 / 4)
  assert overall["a"]["mrr"] == metrics.mean_interval(table["a"]["mrr"])
  assert overall["a"]["recall@10"]["mean"] == pytest.approx(0.75)
  # NaN (not measured) is left out of the mean and the count.
  assert overall["b"]["mrr"]["n"] == 3
  assert overall["b"]["mrr"]["mean"] == pytest.approx(1 / 3)
  assert overall["a"]["tail_patch"]["n"] == 2
  assert overall["a"]["tail_patch"]["mean"] == pytest.approx(1.0)
  low = summary["bucket=low"]
  assert low["a"]["mrr"]["mean"] == pytest.approx(1.25 / 2)
  assert low["b"]["mrr"]["n"] == 1
  assert low["a"]["tail_patch"]["n"] == 1
  assert summary["none"]["a"]["mrr"]["n"] == 0
  assert np.isnan(summary["none"]["a"]["mrr"]["mean"])


def test_summarize_defaults_to_one_group_and_can_skip_intervals():
  table = metrics.ranking_table(_records(), ["a"], k=3)
  summary = metrics.summarize(table, intervals=False)
  assert list(summary) == ["all"]
  assert summary["all"]["a"]["mrr"] == {"mean": 0.25, "n": 4}
  assert summary["all"]["a"]["recall@3"] == {"mean": 0.25, "n": 4}
