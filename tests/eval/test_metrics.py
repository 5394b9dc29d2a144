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
  np.testing.assert_allclose(values["mrr"], [1.0, 1 / 3, 0.0, 1 / 11])
  np.testing.assert_array_equal(values["recall@10"], [1.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(values["precision@10"], [0.2, 0.1, 0.0, 0.0])
  assert values["mrr"].mean() == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)
  assert values["recall@10"].mean() == pytest.approx(0.5)


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


def test_summarize():
  values = metrics.per_query(RANKINGS, RELEVANT)["mrr"]
  summary = metrics.summarize(values, seed=0)
  assert summary["n"] == 4
  assert summary["mean"] == pytest.approx(values.mean())
  assert summary["low"] <= summary["mean"] <= summary["high"]
  assert (summary["low"], summary["high"]) == metrics.bootstrap_interval(
    values, seed=0
  )
