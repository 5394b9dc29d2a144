"""Plots of a fact-tracing evaluation (PNG, matplotlib's Agg backend).

- `metrics_by_method.png`: each metric per method, with 95% intervals;
- `metrics_by_bucket.png`: MRR and tail-patch per frequency bucket;
- `score_distribution.png`: scores of relevant passages against the rest.
"""

import io
import os
from typing import Any

import numpy as np

from trak_jax import files
from trak_jax.eval import metrics as metrics_lib


def plotted_metrics(k: int = metrics_lib.K) -> tuple[str, ...]:
  """The panels of `metrics_by_method.png`, ranking metrics at k."""
  return (*metrics_lib.metric_names(k), "tail_patch")


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _bars(axis, summary_all: dict[str, Any], metric: str) -> None:
  methods = [m for m in summary_all if summary_all[m].get(metric, {}).get("n")]
  means = [summary_all[m][metric]["mean"] for m in methods]
  low = [
    summary_all[m][metric]["mean"] - summary_all[m][metric]["low"]
    for m in methods
  ]
  high = [
    summary_all[m][metric]["high"] - summary_all[m][metric]["mean"]
    for m in methods
  ]
  colors = [
    "#c0392b" if m.startswith("trackstar") else "#7f8c8d" for m in methods
  ]
  axis.barh(methods, means, xerr=[low, high], color=colors, capsize=3)
  axis.invert_yaxis()
  axis.set_title(metric)
  axis.axvline(0, color="black", linewidth=0.5)


def plot_metrics(
  summary: dict[str, Any], path: str, *, k: int = metrics_lib.K
) -> None:
  plt = _pyplot()
  panels = plotted_metrics(k)
  figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
  for axis, metric in zip(axes, panels, strict=True):
    _bars(axis, summary["all"], metric)
  for axis in axes[1:]:
    axis.set_yticklabels([])
  figure.suptitle("Fact tracing: mean and 95% bootstrap interval per method")
  figure.tight_layout()
  _save(figure, path)
  plt.close(figure)


def _save(figure, path: str) -> None:
  if files.is_local(path):
    figure.savefig(path, dpi=110)
    return
  # Matplotlib writes local files only: render a remote PNG in memory.
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110)
  files.write_bytes(path, buffer.getvalue())


def _bucket_order(label: str) -> float:
  text = label.removeprefix("bucket=").split("-")[0]
  return float(text) if text.replace(".", "").isdigit() else float("inf")


def plot_buckets(summary: dict[str, Any], path: str) -> None:
  plt = _pyplot()
  buckets = sorted(
    (g for g in summary if g.startswith("bucket=")), key=_bucket_order
  )
  figure, axes = plt.subplots(1, 2, figsize=(11, 4))
  for axis, metric in zip(axes, ("mrr", "tail_patch"), strict=True):
    for method in summary["all"]:
      values = [summary[b][method].get(metric, {}) for b in buckets]
      if not any(v.get("n") for v in values):
        continue
      axis.plot(
        [b.removeprefix("bucket=") for b in buckets],
        [v.get("mean", np.nan) for v in values],
        marker="o",
        label=method,
        linewidth=2.5 if method == "trackstar" else 1.2,
      )
    axis.set_title(f"{metric} by fact frequency (passages per fact)")
    axis.set_xlabel("frequency bucket")
  axes[1].legend(fontsize=7, loc="best")
  figure.tight_layout()
  _save(figure, path)
  plt.close(figure)


def plot_scores(relevant: np.ndarray, other: np.ndarray, path: str) -> None:
  plt = _pyplot()
  figure, axis = plt.subplots(figsize=(6, 4))
  if len(relevant) and len(other):
    bins = np.linspace(
      min(relevant.min(), other.min()), max(relevant.max(), other.max()), 60
    )
    axis.hist(other, bins=bins, density=True, alpha=0.6, label="other passages")
    axis.hist(relevant, bins=bins, density=True, alpha=0.6, label="relevant")
    axis.legend()
  axis.set_title("TrackStar scores: relevant vs other passages")
  axis.set_xlabel("score (cosine)")
  figure.tight_layout()
  _save(figure, path)
  plt.close(figure)


def write_plots(
  summary: dict[str, Any],
  relevant_scores: np.ndarray,
  other_scores: np.ndarray,
  *,
  output_dir: str,
  k: int = metrics_lib.K,
) -> list[str]:
  """Writes the three PNGs (ranking metrics at k); returns their paths."""
  paths = [
    os.path.join(output_dir, name)
    for name in (
      "metrics_by_method.png",
      "metrics_by_bucket.png",
      "score_distribution.png",
    )
  ]
  plot_metrics(summary, paths[0], k=k)
  plot_buckets(summary, paths[1])
  plot_scores(np.asarray(relevant_scores), np.asarray(other_scores), paths[2])
  return paths
