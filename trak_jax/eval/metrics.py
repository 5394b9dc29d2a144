"""Closed-set attribution metrics (DESIGN.md section 5).

A proponent is correct when its id is in the query's `relevant_ids`.
MRR is the mean of 1/rank of the first correct proponent (0 if none is in
the ranked list); Recall@k is the share of queries with a correct proponent
in the top k; Precision@k is the mean share of the top k that are correct.
Intervals are percentile bootstraps over queries.
"""

from collections.abc import Sequence

import numpy as np


def reciprocal_rank(
  ranked_ids: Sequence[str], relevant: Sequence[str]
) -> float:
  """1 / rank of the first relevant id (1-based), 0 if there is none."""
  wanted = set(relevant)
  for rank, example_id in enumerate(ranked_ids, start=1):
    if example_id in wanted:
      return 1.0 / rank
  return 0.0


def hit_at_k(
  ranked_ids: Sequence[str], relevant: Sequence[str], *, k: int
) -> float:
  """1 if a relevant id is in the top k, else 0."""
  wanted = set(relevant)
  return float(any(i in wanted for i in ranked_ids[:k]))


def precision_at_k(
  ranked_ids: Sequence[str], relevant: Sequence[str], *, k: int
) -> float:
  """Share of the top k that are relevant (dividing by k)."""
  wanted = set(relevant)
  return sum(i in wanted for i in ranked_ids[:k]) / k


def per_query(
  rankings: Sequence[Sequence[str]],
  relevant: Sequence[Sequence[str]],
  *,
  k: int = 10,
) -> dict[str, np.ndarray]:
  """Per-query reciprocal rank, hit@k and precision@k, [queries] each."""
  pairs = list(zip(rankings, relevant, strict=True))
  return {
    "mrr": np.array([reciprocal_rank(r, g) for r, g in pairs]),
    f"recall@{k}": np.array([hit_at_k(r, g, k=k) for r, g in pairs]),
    f"precision@{k}": np.array([precision_at_k(r, g, k=k) for r, g in pairs]),
  }


def bootstrap_interval(
  values: np.ndarray,
  *,
  confidence: float = 0.95,
  resamples: int = 1000,
  seed: int = 0,
) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean over queries."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return (float("nan"), float("nan"))
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, values.size, (resamples, values.size))
  means = values[picks].mean(axis=1)
  tail = (1.0 - confidence) / 2 * 100
  low, high = np.percentile(means, [tail, 100 - tail])
  return float(low), float(high)


def summarize(values: np.ndarray, *, seed: int = 0) -> dict[str, float]:
  """Mean, 95% bootstrap interval and count of per-query values."""
  low, high = bootstrap_interval(values, seed=seed)
  return {
    "mean": float(np.mean(values)) if len(values) else float("nan"),
    "low": low,
    "high": high,
    "n": int(len(values)),
  }
