"""The evaluation's metric tables and results.md.

Per method and query, every metric (`per_query_metrics`), the groups the
summary splits queries by (`query_groups`), what each Hessian used
(`hessian_summaries`), and the markdown of the summary (`results_markdown`).
"""

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines import evaluate_exact, evaluate_influence
from trak_jax import files
from trak_jax import hessian as hessian_core
from trak_jax.eval import metrics as metrics_lib
from trak_jax.eval import tailpatch as tailpatch_lib


def result_metrics(k: int = metrics_lib.K) -> tuple[str, ...]:
  """The results table's columns, its ranking metrics at k."""
  return (
    *metrics_lib.metric_names(k),
    "tail_patch",
    "overlap@10_exact",
    "spearman_exact",
    evaluate_exact.RECALL_VS_EXACT_SEARCH,
  )


METRICS = result_metrics()


def per_query_metrics(
  records: list[dict],
  methods: Sequence[str],
  tail: dict[str, dict[str, np.ndarray]],
  *,
  k: int = metrics_lib.K,
) -> dict[str, dict[str, np.ndarray]]:
  """method -> metric -> [queries] values (NaN where not measured): MRR@k,
  Recall@k, Precision@k (`metrics.ranking_table`) and tail-patch."""
  table = metrics_lib.ranking_table(records, methods, k=k)
  for method in methods:
    table[method]["tail_patch"] = np.full(len(records), np.nan)
    table[method].update(tail.get(method, {}))
  table[evaluate_influence.GROUND_TRUTH] = dict(
    tail.get(evaluate_influence.GROUND_TRUTH, {})
  )
  return table


def query_groups(
  records: list[dict], queries, fields: Sequence[str]
) -> dict[str, np.ndarray]:
  """Group name -> [queries] mask: all, each value of each field, and
  whether the model answers.

  Raises:
    ValueError: If no query has one of `fields`.
  """
  by_id = {q.id: q for q in queries}
  extras = [by_id[r["query_id"]].extra for r in records]
  groups = {"all": np.ones(len(records), bool)}
  for field in fields:
    if not any(field in extra for extra in extras):
      raise ValueError(f"group_by: no query has the field {field!r}")
    values = [str(extra.get(field)) for extra in extras]
    for value in sorted(set(values)):
      groups[f"{field}={value}"] = np.array([v == value for v in values])
  correct = np.array([r["correct"] for r in records])
  groups["model_correct"], groups["model_wrong"] = correct, ~correct
  return groups


def results_markdown(
  summary: dict[str, Any], meta: dict[str, Any], *, k: int = metrics_lib.K
) -> str:
  """The results table (overall, ranking metrics at k) and per-bucket MRR /
  tail-patch tables."""
  columns = result_metrics(k)

  def cell(stats):
    if not stats or stats["n"] == 0:
      return "–"
    return f"{stats['mean']:.3f} [{stats['low']:.3f}, {stats['high']:.3f}]"

  lines = [
    "# Fact-tracing results",
    "",
    f"Queries: {meta['queries']} (tail-patch on {meta['tailpatch_queries']}),"
    f" corpus: {meta['corpus_size']} passages, d = {meta['dim']}, "
    f"tail-patch step size {meta['step_size']:.2e} ({meta['step']}), "
    f"model answers {meta['model_accuracy']:.1%} of queries. "
    "Mean [95% bootstrap interval] over queries.",
    "",
    "| method | " + " | ".join(columns) + " |",
    "|---|" + "---|" * len(columns),
  ]
  for method, metrics in summary["all"].items():
    lines.append(
      f"| {method} | "
      + " | ".join(cell(metrics.get(m)) for m in columns)
      + " |"
    )
  lines += ["", f"Exact reference: {meta.get('exact')}.", ""]
  if meta.get("scann"):
    lines += [_scann_note(meta["scann"]), ""]
  for name, info in meta.get("hessians", {}).items():
    lines.append(
      f"- Hessian {name}: λ = {info['mix']:.3g} (k = {info['eigen_k']} of "
      f"{info['eigen_k_asked']} asked; ranks R_train {info['rank_train']}, "
      f"R_eval {info['rank_eval']}), {info['blocks']} blocks (largest "
      f"{info['largest_block']}, {info['train_examples']} train examples), "
      f"Ledoit-Wolf shrinkage {info['shrinkage_mean']:.3f} on average, "
      f"damping {info['damping']:g}"
      + "".join(f"; warning: {w}" for w in info["warnings"])
    )
  lines += _influence_table(summary["all"], meta)
  groups = [g for g in summary if g != "all"]
  for metric in ("mrr", "tail_patch"):
    lines += ["", f"## {metric} by group", ""]
    lines.append("| method | " + " | ".join(groups) + " |")
    lines.append("|---|" + "---|" * len(groups))
    for method in summary["all"]:
      lines.append(
        f"| {method} | "
        + " | ".join(cell(summary[g][method].get(metric)) for g in groups)
        + " |"
      )
  return "\n".join(lines) + "\n"


def _influence_table(overall, meta) -> list[str]:
  """Every tail-patch variant's Δp and Δlog p, top 1/3/5/10, per method."""

  def cell(stats):  # Δp of a small model is tiny: significant digits.
    if not stats or stats["n"] == 0:
      return "–"
    return f"{stats['mean']:.3g} [{stats['low']:.3g}, {stats['high']:.3g}]"

  variants = meta.get("tailpatch_variants", ["checkpoint"])
  columns = [
    evaluate_influence.influence_metric(v, m, k)
    for v in variants
    for m in tailpatch_lib.MEASURES
    for k in tailpatch_lib.TOP_KS
  ]
  lines = [
    "",
    "## Influence (tail-patch)",
    "",
    f"One step on one proponent; tp_VARIANT_MEASURE@k is the mean over "
    "the top k proponents, then over queries. Variants: checkpoint (the "
    "checkpoint's optimizer and state, clip included), checkpoint_noclip "
    "(the same without the global-norm clip), sgd (θ - η g). Δp is the "
    "paper's measure; the headline column tail_patch above is "
    f"tp_{variants[0]}_dlogp@10, since Δlog p does not vanish for targets "
    "the model gives little probability, as Δp does. exact: the exact "
    "(unprojected) ranking's proponents, the reference for the projection.",
    "",
    "| method | " + " | ".join(columns) + " |",
    "|---|" + "---|" * len(columns),
  ]
  for method, metrics in overall.items():
    if not any((metrics.get(c) or {}).get("n") for c in columns):
      continue
    lines.append(
      f"| {method} | "
      + " | ".join(cell(metrics.get(c)) for c in columns)
      + " |"
    )
  return lines


def _scann_note(scann: dict[str, Any]) -> str:
  settings = scann["settings"]
  recall = scann["recall_at_10"]
  row, trackstar = evaluate_exact.SCANN, evaluate_exact.TRACKSTAR
  tree = (
    "no partitioning tree"
    if settings["num_leaves"] <= 1
    else f"{settings['num_leaves']} leaves, "
    f"{settings['num_leaves_to_search']} searched per query"
  )
  return (
    f"{row}: {trackstar}'s store and Hessian searched through ScaNN "
    f"({tree}; asymmetric hashing, {settings['dims_per_block']} dims per "
    f"block; exact re-ordering of {settings['reorder_k']} candidates"
    + ("" if recall is None else f"; index job's Recall@10 {recall:.3f}")
    + f"). {evaluate_exact.RECALL_VS_EXACT_SEARCH}: the share of "
    f"{trackstar}'s exact-search top-10 that its ScaNN top-10 contains "
    f"(1.0 for {trackstar}, the reference). ScaNN returns only its top 10, "
    "so it has no spearman_exact (a whole-corpus ranking), and tail-patch "
    "skips it: – means not measured."
  )


def hessian_summaries(output_dir: str) -> dict[str, dict]:
  """What each fitted Hessian used: λ, k, ranks, shrinkage, warnings."""
  root = os.path.join(output_dir, "hessians")
  summaries = {}
  for name in sorted(os.listdir(root)) if files.exists(root) else []:
    _, info = hessian_core.load(os.path.join(root, name))
    shrinkage = info.get("shrinkage") or [0.0]
    summaries[name] = {
      "mix": info["mix"],
      "eigen_k": info["eigen_k"],
      "eigen_k_asked": info.get("eigen_k_asked"),
      "rank_train": info.get("rank_train"),
      "rank_eval": info.get("rank_eval"),
      "blocks": len(info["block_sizes"]),
      "largest_block": max(info["block_sizes"]),
      "train_examples": info["train_examples"],
      "damping": info["spec"]["damping"],
      "shrinkage_mean": float(np.mean(shrinkage)),
      "warnings": info.get("warnings", []),
    }
  return summaries
