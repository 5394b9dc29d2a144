"""Tail-patch: the influence of each method's proponents, one step each.

For each query, one training step on each of its top proponents (per
variant of the step, `trak_jax.eval.tailpatch.OPTIMIZERS`) and the change
of the target's probability; the ground-truth passages (`GROUND_TRUTH`) are
the reference row.
"""

import collections
from collections.abc import Sequence

import numpy as np

from pipelines import evaluate_exact, evaluate_steps
from trak_jax import files
from trak_jax.eval import tailpatch as tailpatch_lib

GROUND_TRUTH = "ground_truth"


def _patcher(loaded, variant: str, step_size: float | None):
  """The variant's patcher; "checkpoint" falls back to SGD without state."""
  if loaded.opt_state is None and variant != "sgd":
    variant = "sgd"
  return tailpatch_lib.TailPatcher.from_checkpoint(
    loaded,
    step_size=step_size or loaded.metadata.get("final_learning_rate"),
    optimizer=variant,
    seq_len=loaded.metadata.get("train_config", {}).get("seq_len")
    or loaded.max_len,
  )


def influence_metric(variant: str, measure: str, k: int) -> str:
  """The influence table's column: tail-patch `variant`, `measure`, top k."""
  return f"tp_{variant}_{measure}@{k}"


def tail_patch(
  records: list[dict],
  corpus: dict[str, str],
  queries,
  loaded,
  *,
  methods: Sequence[str],
  limit: int | None,
  step_size: float | None,
  variants: Sequence[str] = ("checkpoint",),
  top_ks: Sequence[int] = tailpatch_lib.TOP_KS,
) -> tuple[dict[str, dict[str, np.ndarray]], float]:
  """Per method, metric -> [queries] tail-patch (NaN past `limit`); the
  ground-truth passages as a reference row.

  Each variant patches each query's top max(top_ks) proponents once; the
  top-k means of Δp and Δlog p come from those deltas. `tail_patch` is the
  first variant's Δlog p over the top 10 (the headline column).
  """
  patchers = {v: _patcher(loaded, v, step_size) for v in variants}
  by_id = {q.id: q for q in queries}
  chosen = records[:limit] if limit is not None else records
  top = max(top_ks)
  values = collections.defaultdict(
    lambda: collections.defaultdict(lambda: np.full(len(records), np.nan))
  )
  for row, record in enumerate(chosen):
    query = by_id[record["query_id"]]
    texts = {
      m: [p["text"] for p in record["results"][m]["proponents"][:top]]
      for m in methods
    }
    texts[GROUND_TRUTH] = [corpus[i] for i in record["relevant_ids"][:top]]
    for method, passages in texts.items():
      if not passages:
        continue
      for variant, patcher in patchers.items():
        changes = patcher.changes(passages, query)
        for measure in tailpatch_lib.MEASURES:
          means = tailpatch_lib.top_k_means(changes[measure], top_ks)
          for k, mean in means.items():
            name = influence_metric(variant, measure, k)
            values[method][name][row] = mean
        if variant == variants[0]:
          values[method]["tail_patch"][row] = np.mean(changes["dlogp"][:10])
    if row % 25 == 0:
      evaluate_steps.log(f"tail-patch {row + 1}/{len(chosen)}")
  step = patchers[variants[0]].step_size
  return {m: dict(v) for m, v in values.items()}, step


def cached_tail_patch(
  steps: evaluate_steps.Steps, records, corpus, queries, loaded, **kw
):
  """`tail_patch` as the step "tailpatch": run and kept in steps/, or read
  back where it finished before from the same inputs (the same proponents:
  it reads the retrieve and exact steps)."""
  cached = steps.path("tailpatch", ".npz")
  computed = {}

  def job():
    tail, step = tail_patch(records, corpus, queries, loaded, **kw)
    computed["tail"] = tail, step
    flat = {
      f"{method}\t{metric}": values
      for method, columns in tail.items()
      for metric, values in columns.items()
    }
    files.save_npz(cached, step_size=np.float64(step), **flat)

  inputs = (sorted(kw.items()), [r["query_id"] for r in records], loaded.digest)
  steps.run("tailpatch", inputs, job, after=["retrieve", evaluate_exact.EXACT])
  if "tail" in computed:
    return computed["tail"]
  tail = collections.defaultdict(dict)
  with files.load_npz(cached) as arrays:
    for key in arrays.files:
      if key != "step_size":
        method, metric = key.split("\t")
        tail[method][metric] = arrays[key]
    return dict(tail), float(arrays["step_size"])


def check_step_size(options, header) -> None:
  """Fails before the long steps if tail-patch would have no step size.

  Args:
    options: The evaluation's `EvaluateOptions`.
    header: The checkpoint's header.

  Raises:
    ValueError: If neither the checkpoint nor `options` give a step size.
  """
  if (
    header.optimizer_config is None
    and options.tailpatch_queries != 0
    and not options.tailpatch_step_size
    and not header.metadata.get("final_learning_rate")
  ):
    raise ValueError(
      f"{header.path}: the checkpoint has no optimizer to take tail-patch's "
      "step size from: set tailpatch_step_size (or import with "
      "--learning_rate), or tailpatch_queries=0"
    )
