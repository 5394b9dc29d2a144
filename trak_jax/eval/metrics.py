"""Closed-set attribution metrics (DESIGN.md section 5) and their summary.

A proponent is correct when its id is in the query's `relevant_ids`.
MRR@k is the mean of 1/rank of the first correct proponent (0 if none is in
the top k); Recall@k is the share of queries with a correct proponent in the
top k; Precision@k is the mean share of the top k that are correct.
Intervals are percentile bootstraps over queries.

`summarize` is the one summary of per-query values (the retrieval job's
metrics.json, the evaluation's results.json and the report's header all
come from it): per group of queries, method and metric, the mean, its
interval and the number of queries measured.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The TrackStar paper reports MRR and Recall@10; the jobs retrieve 10.
K = 10
# A float reciprocal rank 1/k times k can fall just short of 1.
_EPS = 1e-9


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


def metric_names(k: int = K) -> tuple[str, str, str]:
  """The ranking metrics' names at k: ("mrr", "recall@k", "precision@k")."""
  return ("mrr", f"recall@{k}", f"precision@{k}")


def _at_k(
  reciprocal_ranks: np.ndarray, precisions: np.ndarray, *, k: int
) -> dict[str, np.ndarray]:
  """MRR@k, Recall@k and Precision@k from [queries] reciprocal ranks."""
  mrr, recall, precision = metric_names(k)
  hits = reciprocal_ranks * k >= 1 - _EPS
  return {
    mrr: np.where(hits, reciprocal_ranks, 0.0),
    recall: hits.astype(np.float64),
    precision: precisions,
  }


def per_query(
  rankings: Sequence[Sequence[str]],
  relevant: Sequence[Sequence[str]],
  *,
  k: int = K,
) -> dict[str, np.ndarray]:
  """Per-query reciprocal rank (0 past k), hit@k and precision@k.

  Args:
    rankings: [queries] ranked ids, best first.
    relevant: [queries] the ids that count as correct.
    k: the cut-off.

  Returns:
    `metric_names(k)` -> [queries] float64 values.
  """
  pairs = list(zip(rankings, relevant, strict=True))
  return _at_k(
    np.array([reciprocal_rank(r, g) for r, g in pairs], np.float64),
    np.array([precision_at_k(r, g, k=k) for r, g in pairs], np.float64),
    k=k,
  )


def _method_values(
  records: Sequence[Mapping[str, Any]], method: str, *, k: int
) -> dict[str, np.ndarray]:
  """`metric_names(k)` -> [records] values, NaN without a result."""
  rows = [i for i, r in enumerate(records) if method in r["results"]]
  results = [records[i]["results"][method] for i in rows]
  ranked = [[p["id"] for p in result["proponents"]] for result in results]
  relevant = [records[i]["relevant_ids"] for i in rows]
  values = _at_k(
    np.array([result["reciprocal_rank"] for result in results], np.float64),
    np.array(
      [
        precision_at_k(r, g, k=k) for r, g in zip(ranked, relevant, strict=True)
      ],
      np.float64,
    ),
    k=k,
  )
  table = {name: np.full(len(records), np.nan) for name in values}
  for name, scored in values.items():
    table[name][rows] = scored
  return table


def ranking_table(
  records: Sequence[Mapping[str, Any]],
  methods: Sequence[str],
  *,
  k: int = K,
) -> dict[str, dict[str, np.ndarray]]:
  """Per method, MRR@k, Recall@k and Precision@k of each report record.

  A record's `reciprocal_rank` gives MRR and Recall (report.jsonl's
  proponents may be a shortened list; the jobs write the same list for
  both), its proponents' ids Precision.

  Args:
    records: `report.jsonl` records (`trak_jax.report.ReportRecord`).
    methods: the methods to measure.
    k: the cut-off.

  Returns:
    method -> `metric_names(k)` -> [records] float64 values, NaN where a
    record has no result for the method. A record without relevant ids
    scores 0; leave it out of `records` to leave it unscored.
  """
  return {m: _method_values(records, m, k=k) for m in methods}


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


def _mean(values: np.ndarray) -> float:
  return float(np.mean(values)) if len(values) else float("nan")


def mean_interval(values: np.ndarray, *, seed: int = 0) -> dict[str, float]:
  """Mean, 95% bootstrap interval and count of per-query values."""
  low, high = bootstrap_interval(values, seed=seed)
  return {
    "mean": _mean(values),
    "low": low,
    "high": high,
    "n": int(len(values)),
  }


def summarize(
  table: Mapping[str, Mapping[str, np.ndarray]],
  *,
  groups: Mapping[str, np.ndarray] | None = None,
  intervals: bool = True,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
  """The metric summary: per group, method and metric, over queries.

  Args:
    table: method -> metric -> [queries] values, NaN where not measured
      (`ranking_table`, plus any other per-query measure).
    groups: group name -> [queries] bool mask; default {"all": every query}.
    intervals: whether to add the 95% bootstrap interval ("low", "high").

  Returns:
    group -> method -> metric -> {"mean", "low", "high", "n"} over the
    group's measured (non-NaN) values ({"mean", "n"} without intervals); the
    mean of no values is NaN.
  """
  if groups is None:
    sizes = {len(v) for metrics in table.values() for v in metrics.values()}
    groups = {"all": np.ones(max(sizes, default=0), bool)}
  summary = {}
  for group, mask in groups.items():
    summary[group] = {}
    for method, metrics in table.items():
      summary[group][method] = {}
      for metric, values in metrics.items():
        chosen = np.asarray(values, np.float64)[mask]
        chosen = chosen[~np.isnan(chosen)]
        summary[group][method][metric] = (
          mean_interval(chosen)
          if intervals
          else {"mean": _mean(chosen), "n": int(len(chosen))}
        )
  return summary
