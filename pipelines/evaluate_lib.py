"""The fact-tracing evaluation: every method, every metric, one report.

For a checkpoint, a corpus and a query file (DESIGN.md section 5):

1. encode the corpus with the Beam encode job, once per correction the
   methods need (none; the optimizer's);
2. fit each Hessian the methods need (R_train; mixed R) with the Beam job;
3. build an exact index per gradient method and, for TrackStar, a ScaNN
   index over the same store and Hessian (the row `trackstar_scann`), and
   retrieve every query with every method in one job;
4. add BM25 (queries = prompt + target) and, as a tail-patch reference, the
   ground-truth passages;
5. score MRR, Recall@10, Precision@10 and tail-patch per method, with 95%
   bootstrap intervals, overall, per frequency bucket and by whether the
   model answers the query; for `trackstar_scann`, also the share of
   TrackStar's exact-search top-10 that ScaNN finds;
6. write results.json, results.md, plots and the side-by-side report.

Each job (encode, Hessian, index, retrieve) and the slow in-process steps
(the exact reference, tail-patch) are `Steps`: recorded in steps/ once
finished, so a rerun with the same output_dir resumes after the last step
that finished with the same inputs (`EvaluateOptions.resume`).
"""

import collections
import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipelines import encode_lib, hessian_lib, index_lib, retrieve_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import hessian as hessian_core
from trak_jax import index as index_core
from trak_jax import projection as projection_lib
from trak_jax import report as report_lib
from trak_jax import store as store_lib
from trak_jax.eval import bm25 as bm25_lib
from trak_jax.eval import exact as exact_lib
from trak_jax.eval import metrics as metrics_lib
from trak_jax.eval import plots as plots_lib
from trak_jax.eval import tailpatch as tailpatch_lib

# grad_dot_corrected and trackstar_one_sided are selectable (`methods`) but
# not defaults: their cost in the demo's time is not measured yet
# (trackstar_one_sided reuses trackstar's store, but fits one more Hessian
# and retrieves with one more method).
NOT_DEFAULT = ("grad_dot_corrected", "trackstar_one_sided")
GRADIENT_METHODS = tuple(p for p in encoder_lib.PRESETS if p not in NOT_DEFAULT)
BM25 = "bm25"
GROUND_TRUTH = "ground_truth"
EXACT = "exact"
TRACKSTAR = "trackstar"
# TrackStar's store and Hessian, searched through ScaNN instead of exactly.
SCANN = "trackstar_scann"
RECALL_VS_EXACT_SEARCH = "recall@10_vs_exact_search"


def result_metrics(k: int = metrics_lib.K) -> tuple[str, ...]:
  """The results table's columns, its ranking metrics at k."""
  return (
    *metrics_lib.metric_names(k),
    "tail_patch",
    "overlap@10_exact",
    "spearman_exact",
    RECALL_VS_EXACT_SEARCH,
  )


METRICS = result_metrics()


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
  """What to evaluate and how.

  Attributes:
    corpus: Corpus spec.
    queries: Query JSONL with `relevant_ids`.
    checkpoint: The trained model.
    output_dir: Receives stores/, hessians/, indexes/, report/ and results.
    methods: Gradient methods (presets of `trak_jax.encoder`).
    correction: TrackStar's correction ("adafactor", "adam"; default: the
      one matching the checkpoint's optimizer).
    factored: Approximate TrackStar's elementwise V ("adam", "estimated")
      by its row and column factors (`CorrectionSpec.factored`); the exact
      reference keeps the elementwise V, so its overlap measures both.
    projection: The projection every method shares.
    hessian: TrackStar's Hessian spec (kind is set per method).
    k: Proponents per query.
    tailpatch_queries: Queries that tail-patch scores (the first n; None:
      all); tail-patch is the slow part.
    tailpatch_step_size: Step size (None: the end-of-training rate).
    tailpatch_variants: Tail-patch steps (`trak_jax.eval.tailpatch.
      OPTIMIZERS`); the first is the headline `tail_patch` column, every
      one gets Δp and Δlog p over the top 1, 3, 5 and 10 in results.md's
      influence table. Each variant costs one more patch per proponent.
    num_shards: Store shards.
    batch_size: Examples per encoder call.
    pipeline_options: Beam options for every job.
    group_by: Query fields the results are split by (besides whether the
      model answers the query).
    exact_max_params: The exact reference row (whole gradients) runs for
      models up to this many parameters.
    scann: When "trackstar" is among `methods`, also search its store and
      Hessian through a ScaNN index (the row `trackstar_scann`).
    resume: Skip each step that finished in an earlier run into
      `output_dir` with the same inputs (`Steps`); False reruns every step.
  """

  corpus: str
  queries: str
  checkpoint: str
  output_dir: str
  methods: tuple[str, ...] = GRADIENT_METHODS
  correction: str | None = None
  factored: bool = False
  projection: projection_lib.ProjectionSpec = projection_lib.ProjectionSpec()
  hessian: hessian_core.HessianSpec = hessian_core.HessianSpec()
  k: int = 10
  tailpatch_queries: int | None = None
  tailpatch_step_size: float | None = None
  tailpatch_variants: tuple[str, ...] = ("checkpoint",)
  num_shards: int = 4
  batch_size: int = 32
  pipeline_options: str = "--runner=DirectRunner"
  group_by: tuple[str, ...] = ("frequency_bucket",)
  exact_max_params: int = 20_000_000
  scann: bool = True
  resume: bool = True


def checkpoint_correction(optimizer_name: str | None) -> str:
  """The correction that reads the optimizer's own second moments;
  "estimated" for a checkpoint without an optimizer (an import)."""
  if optimizer_name is None:
    return "estimated"
  return {"adamw": "adam", "adafactor": "adafactor"}[optimizer_name]


def optimizer_name(checkpoint) -> str | None:
  """The name of a checkpoint's (or header's) optimizer, None if it has none."""
  config = checkpoint.optimizer_config
  return None if config is None else config.name


def method_configs(
  options: EvaluateOptions, optimizer_name: str
) -> dict[str, encoder_lib.EncoderConfig]:
  correction = options.correction or checkpoint_correction(optimizer_name)
  return {
    name: encoder_lib.preset(
      name,
      correction=correction,
      factored=options.factored,
      projection=options.projection,
      hessian=options.hessian,
    )
    for name in options.methods
  }


def _key(config: encoder_lib.EncoderConfig) -> str:
  """The store a config encodes into: one per correction (φ precedes R)."""
  spec = config.correction
  return spec.kind + ("-factored" if spec.factored else "")


def _hessian_key(config: encoder_lib.EncoderConfig) -> tuple[str, ...]:
  """The Hessian a config fits: its store's, its kind's and, where queries
  are corrected otherwise (R_eval is fitted from them), theirs."""
  key = (_key(config), config.hessian.kind)
  if not config.one_sided:
    return key
  spec = config.query_correction_spec
  return key + ("queries", spec.kind + ("-factored" if spec.factored else ""))


def _log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


STEPS_DIR = "steps"  # Under the output directory: a record per finished step.


class Steps:
  """The evaluation's steps, each recorded once it has finished, so that a
  rerun resumes after the last finished one.

  A step's record (steps/<name>.json) holds what it ran with: the repr of
  its inputs (a job's options, the checkpoint's header). It is removed
  before the step runs and written once the step has returned, so a step
  that failed or was stopped has none. A rerun skips a step whose record
  holds the same inputs unless a step it reads (`after`) ran in this
  evaluation. Inputs are compared by value, not by the files' contents: a
  corpus or checkpoint changed in place needs `resume=False`.

  Args:
    output_dir: The evaluation's output directory.
    resume: Whether finished steps are skipped.
  """

  def __init__(self, output_dir: str, *, resume: bool):
    self.directory = os.path.join(output_dir, STEPS_DIR)
    self._resume = resume
    self.ran: list[str] = []
    self.skipped: list[str] = []

  def path(self, name: str, suffix: str = ".json") -> str:
    """Where step `name` keeps its record (or, with another suffix, what it
    computed in process)."""
    return os.path.join(self.directory, name + suffix)

  def _recorded(self, name: str) -> dict[str, Any] | None:
    if not files.exists(self.path(name)):
      return None
    with files.open(self.path(name)) as f:
      return json.load(f)

  def run(
    self,
    name: str,
    inputs: Any,
    job: Callable[[], Any],
    *,
    after: Sequence[str] = (),
  ) -> bool:
    """Runs `job` unless step `name` finished before from the same inputs
    and no step in `after` ran now; returns whether it ran."""
    record = {"step": name, "inputs": repr(inputs)}
    fresh = not set(after) & set(self.ran)
    if self._resume and fresh and self._recorded(name) == record:
      _log(f"{name}: finished before from the same inputs, skipped")
      self.skipped.append(name)
      return False
    files.makedirs(self.directory)
    files.remove(self.path(name))
    job()
    files.write_json(self.path(name), record)
    self.ran.append(name)
    return True


def _build_index(
  make_pipeline, options: index_lib.IndexOptions, steps: Steps, after
) -> str:
  name = os.path.basename(options.output_dir)

  def job():
    _log(f"{options.kind} index {name}")
    index_lib.run_pipeline(make_pipeline(), options=options)

  steps.run(f"index-{name}", options, job, after=after)
  return options.output_dir


def build_indexes(
  options: EvaluateOptions,
  configs: dict[str, encoder_lib.EncoderConfig],
  make_pipeline: Callable[[], Any],
  steps: Steps,
) -> dict[str, str]:
  """Runs encode, hessian and index jobs; returns method -> index dir.

  Each job is a step of `steps` (skipped where it finished before from the
  same options); an index reads its store's and Hessian's steps.

  Every method gets an exact index; TrackStar also a ScaNN one over the same
  store and Hessian (`SCANN`, right after it) unless `options.scann` is off.
  ScaNN's settings are `index.ScannSpec`'s defaults: no partitioning tree,
  so it also builds on stores too small to partition.
  """
  out = options.output_dir
  digest = checkpoint_lib.read_header(options.checkpoint).digest
  stores = {}
  for config in configs.values():
    kind = _key(config)
    if kind in stores:
      continue
    stores[kind] = os.path.join(out, "stores", kind)
    encode = encode_lib.EncodeOptions(
      corpus=options.corpus,
      checkpoint=options.checkpoint,
      output_dir=stores[kind],
      encoder_config=config,
      num_shards=options.num_shards,
      batch_size=options.batch_size,
      energy_queries=options.queries,
    )

    def encode_job(kind=kind, encode=encode):
      _log(f"encode corpus (correction {kind})")
      encode_lib.run_pipeline(make_pipeline(), options=encode)

    steps.run(f"encode-{kind}", (encode, digest), encode_job)
  hessians, indexes = {}, {}
  for name, config in configs.items():
    store_dir = stores[_key(config)]
    hessian_dir = None
    if config.hessian.kind != "none":
      hkey = _hessian_key(config)
      if hkey not in hessians:
        hessians[hkey] = os.path.join(out, "hessians", "-".join(hkey))
        fit = hessian_lib.HessianOptions(
          store_dir=store_dir,
          queries=options.queries,
          checkpoint=options.checkpoint,
          output_dir=hessians[hkey],
          encoder_config=config,
          batch_size=options.batch_size,
        )

        def fit_job(hkey=hkey, fit=fit):
          _log(f"fit hessian {hkey}")
          hessian_lib.run_pipeline(make_pipeline(), options=fit)

        steps.run(
          f"hessian-{'-'.join(hkey)}",
          (fit, digest),
          fit_job,
          after=[f"encode-{_key(config)}"],
        )
      hessian_dir = hessians[hkey]
    reads = [f"encode-{_key(config)}"]
    if hessian_dir is not None:
      reads.append(f"hessian-{os.path.basename(hessian_dir)}")
    exact = index_lib.IndexOptions(
      store_dir=store_dir,
      hessian_dir=hessian_dir,
      output_dir=os.path.join(out, "indexes", name),
      encoder_config=config,
      kind="exact",
    )
    indexes[name] = _build_index(make_pipeline, exact, steps, reads)
    if name == TRACKSTAR and options.scann:
      indexes[SCANN] = _build_index(
        make_pipeline,
        dataclasses.replace(
          exact, output_dir=os.path.join(out, "indexes", SCANN), kind="scann"
        ),
        steps,
        reads,
      )
  return indexes


def add_bm25(
  records: list[dict], corpus: dict[str, str], queries, *, k: int
) -> None:
  """Adds BM25's proponents (queries = prompt + target) to each record."""
  ids = sorted(corpus)
  index = bm25_lib.Bm25Index.build(ids, [corpus[i] for i in ids])
  by_id = {q.id: q for q in queries}
  found_ids, scores = index.search_queries(
    [by_id[r["query_id"]] for r in records], k=k
  )
  for record, ranked, row in zip(records, found_ids, scores, strict=True):
    relevant = set(record["relevant_ids"])
    record["results"][BM25] = {
      "reciprocal_rank": metrics_lib.reciprocal_rank(ranked, relevant),
      "proponents": [
        {
          "rank": rank,
          "id": pid,
          "score": float(score),
          "text": corpus[pid],
          "relevant": pid in relevant,
        }
        for rank, (pid, score) in enumerate(
          zip(ranked, row, strict=True), start=1
        )
      ],
    }


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
      _log(f"tail-patch {row + 1}/{len(chosen)}")
  step = patchers[variants[0]].step_size
  return {m: dict(v) for m, v in values.items()}, step


def cached_tail_patch(steps: Steps, records, corpus, queries, loaded, **kw):
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
  steps.run("tailpatch", inputs, job, after=["retrieve", EXACT])
  if "tail" in computed:
    return computed["tail"]
  tail = collections.defaultdict(dict)
  with files.load_npz(cached) as arrays:
    for key in arrays.files:
      if key != "step_size":
        method, metric = key.split("\t")
        tail[method][metric] = arrays[key]
    return dict(tail), float(arrays["step_size"])


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
  table[GROUND_TRUTH] = dict(tail.get(GROUND_TRUTH, {}))
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
    influence_metric(v, m, k)
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
  tree = (
    "no partitioning tree"
    if settings["num_leaves"] <= 1
    else f"{settings['num_leaves']} leaves, "
    f"{settings['num_leaves_to_search']} searched per query"
  )
  return (
    f"{SCANN}: {TRACKSTAR}'s store and Hessian searched through ScaNN "
    f"({tree}; asymmetric hashing, {settings['dims_per_block']} dims per "
    f"block; exact re-ordering of {settings['reorder_k']} candidates"
    + ("" if recall is None else f"; index job's Recall@10 {recall:.3f}")
    + f"). {RECALL_VS_EXACT_SEARCH}: the share of {TRACKSTAR}'s exact-search "
    f"top-10 that its ScaNN top-10 contains (1.0 for {TRACKSTAR}, the "
    "reference). ScaNN returns only its top 10, so it has no spearman_exact "
    "(a whole-corpus ranking), and tail-patch skips it: – means not measured."
  )


def score_distribution(options, configs, indexes, loaded, queries, method):
  """Scores of relevant vs other passages for `method` (all pairs)."""
  index = retrieve_lib.load_method(loaded, indexes[method])
  encoder, built = index
  encoded = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=options.batch_size,
    max_len=loaded.max_len,
  )
  scores = encoded.features @ built.vectors.T  # [queries, corpus]
  position = {example_id: i for i, example_id in enumerate(built.ids)}
  relevant = np.zeros_like(scores, bool)
  for row, query in enumerate(queries):
    for example_id in query.relevant_ids:
      if example_id in position:
        relevant[row, position[example_id]] = True
  return scores[relevant], scores[~relevant]


def _corpus_batches(loaded, corpus: dict[str, str], options):
  examples = [data_lib.CorpusExample(i, t) for i, t in sorted(corpus.items())]
  max_len = loaded.max_len
  tokenized = encode_lib.tokenize_examples(
    loaded.tokenizer, examples, max_len=max_len, truncate=True, rejected=[]
  )
  return [
    ([tokenized[i].id for i in planned.rows], planned.batch)
    for planned in encode_lib.make_batches(
      tokenized,
      batch_size=options.batch_size,
      max_len=max_len,
      length_buckets=encode_lib.EncodeOptions.length_buckets,
    )
  ]


def method_scores(loaded, index_dir, queries, options) -> tuple:
  """A method's [queries, corpus] scores over its whole index, and ids."""
  encoder, built = retrieve_lib.load_method(loaded, index_dir)
  encoded = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=options.batch_size,
    max_len=loaded.max_len,
  )
  return encoded.features @ built.vectors.T, list(built.ids)


def _index_correction(index_dir: str) -> correction_lib.CorrectionSpec:
  info = index_core.load_info(index_dir)
  return correction_lib.CorrectionSpec(**info["encoder_config"]["correction"])


def add_exact(records, corpus, queries, loaded, options, indexes, steps):
  """Adds the exact reference's proponents to each record; returns, per
  gradient method, its per-query top-10 overlap with the exact ranking and
  the Spearman correlation of its scores with the exact ones, and a note
  if the exact reference could not run.

  ScaNN (`SCANN`) returns only its top k: its overlap comes from the
  proponents it retrieved; a Spearman correlation over the whole corpus is
  not defined for it, so it has none."""
  correction = options.correction or checkpoint_correction(
    optimizer_name(loaded)
  )
  if correction == "estimated":  # The V the stores saved and recorded.
    correction = next(
      dataclasses.replace(recorded, factored=False)
      for name in indexes
      if (recorded := _index_correction(indexes[name])).kind == "estimated"
    )
  by_id = {q.id: q for q in queries}
  ordered = [by_id[r["query_id"]] for r in records]
  cached = steps.path(EXACT, ".npz")
  computed = {}

  def exact_job():
    _log("exact reference (whole gradients)")
    computed["exact"] = exact_lib.exact_scores(
      loaded,
      correction=correction,
      corpus_batches=_corpus_batches(loaded, corpus, options),
      queries=ordered,
      batch_size=options.batch_size,
      max_params=options.exact_max_params,
      progress=_log,
    )
    files.save_npz(
      cached,
      scores=computed["exact"].scores,
      ids=np.asarray(computed["exact"].ids, dtype=str),
    )

  inputs = (
    options.checkpoint,
    options.corpus,
    [q.id for q in ordered],
    repr(correction),
    options.exact_max_params,
    loaded.digest,
  )
  try:
    steps.run(EXACT, inputs, exact_job)
  except exact_lib.TooLargeError as error:
    _log(f"no exact reference: {error}")
    return {}, str(error)
  exact = computed.get("exact")
  if exact is None:  # Finished before: read what it computed.
    with files.load_npz(cached) as arrays:
      exact = exact_lib.ExactScores(
        scores=arrays["scores"], ids=[str(i) for i in arrays["ids"]]
      )
  top = exact_lib.top_k(exact.scores, exact.ids, k=options.k)
  for record, (ranked, scores) in zip(records, top, strict=True):
    relevant = set(record["relevant_ids"])
    record["results"][EXACT] = {
      "reciprocal_rank": metrics_lib.reciprocal_rank(ranked, relevant),
      "proponents": [
        {
          "rank": rank,
          "id": pid,
          "score": float(score),
          "text": corpus[pid],
          "relevant": pid in relevant,
        }
        for rank, (pid, score) in enumerate(
          zip(ranked, scores, strict=True), start=1
        )
      ],
    }
  agreement = {EXACT: _agreement(exact.scores, exact.scores, top, top)}
  column = {example_id: j for j, example_id in enumerate(exact.ids)}
  for name, index_dir in indexes.items():
    if name == SCANN:
      agreement[name] = {"overlap@10_exact": _retrieved_overlap(records, top)}
      continue
    scores, ids = method_scores(loaded, index_dir, ordered, options)
    aligned = np.zeros_like(exact.scores)
    aligned[:, [column[i] for i in ids]] = scores
    mine = exact_lib.top_k(aligned, exact.ids, k=options.k)
    agreement[name] = _agreement(aligned, exact.scores, mine, top)
  return agreement, None


def _retrieved_overlap(records, exact_ranked) -> np.ndarray:
  return np.array(
    [
      exact_lib.overlap_at_k(_ranked(record, SCANN), exact[0], k=10)
      for record, exact in zip(records, exact_ranked, strict=True)
    ]
  )


def _ranked(record: dict, method: str) -> list[str]:
  return [p["id"] for p in record["results"][method]["proponents"]]


def recall_vs_exact_search(
  found: Sequence[str], exact: Sequence[str], *, k: int = 10
) -> float:
  """The share of exact search's top k that an approximate top k contains
  (NaN if exact search found nothing)."""
  reference = set(exact[:k])
  if not reference:
    return float("nan")
  return len(set(found[:k]) & reference) / len(reference)


def scann_recall(records: list[dict]) -> dict[str, dict[str, np.ndarray]]:
  """Per query, the share of TrackStar's exact-search top 10 found by its
  ScaNN top 10 (`SCANN`), and by itself (1.0: the reference row)."""
  return {
    method: {
      RECALL_VS_EXACT_SEARCH: np.array(
        [
          recall_vs_exact_search(
            _ranked(record, method), _ranked(record, TRACKSTAR)
          )
          for record in records
        ]
      )
    }
    for method in (TRACKSTAR, SCANN)
  }


def scann_summary(indexes: dict[str, str]) -> dict[str, Any] | None:
  """ScaNN's settings and its index job's Recall@10 (stored examples as
  queries), from index.json; None without a ScaNN index."""
  if SCANN not in indexes:
    return None
  with files.open(os.path.join(indexes[SCANN], index_core.INFO)) as f:
    info = json.load(f)
  return {
    "settings": info["scann"],
    "recall_at_10": (info.get("recall_at_10") or {}).get("recall"),
  }


def _agreement(scores, exact, ranked, exact_ranked) -> dict[str, np.ndarray]:
  return {
    "overlap@10_exact": np.array(
      [
        exact_lib.overlap_at_k(a[0], b[0], k=10)
        for a, b in zip(ranked, exact_ranked, strict=True)
      ]
    ),
    "spearman_exact": exact_lib.spearman(scores, exact),
  }


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


def _check_step_size(options: EvaluateOptions, header) -> None:
  """Fails before the long steps if tail-patch would have no step size."""
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


def run_evaluation(
  options: EvaluateOptions, *, make_pipeline: Callable[[], Any]
) -> dict[str, Any]:
  """Runs every stage and writes results; returns results.json's content."""
  start = time.perf_counter()
  files.makedirs(options.output_dir)
  header = checkpoint_lib.read_header(options.checkpoint)
  _check_step_size(options, header)
  configs = method_configs(options, optimizer_name(header))
  steps = Steps(options.output_dir, resume=options.resume)
  indexes = build_indexes(options, configs, make_pipeline, steps)
  report_dir = os.path.join(options.output_dir, "report")
  retrieve = retrieve_lib.RetrieveOptions(
    queries=options.queries,
    checkpoint=options.checkpoint,
    corpus=options.corpus,
    indexes=tuple(indexes.items()),
    output_dir=report_dir,
    k=options.k,
    batch_size=options.batch_size,
  )

  def retrieve_job():
    _log("retrieve with every method")
    retrieve_lib.run_pipeline(make_pipeline(), options=retrieve)

  steps.run(
    "retrieve",
    (retrieve, header.digest),
    retrieve_job,
    after=[f"index-{name}" for name in indexes],
  )
  records = report_lib.read_report_jsonl(
    os.path.join(report_dir, "report.jsonl")
  )
  queries = data_lib.read_queries(options.queries)
  corpus = {
    e.id: e.text
    for e in data_lib.read_corpus(options.corpus, skip_malformed=True)
  }
  _log("BM25")
  add_bm25(records, corpus, queries, k=options.k)
  methods = [BM25, *indexes]
  loaded = checkpoint_lib.load_checkpoint(options.checkpoint)
  agreement, exact_note = add_exact(
    records, corpus, queries, loaded, options, indexes, steps
  )
  if exact_note is None:
    methods.append(EXACT)
  _log("tail-patch")
  # ScaNN's proponents are nearly TrackStar's: tail-patch (the slow part)
  # leaves them out, and results.md shows its tail_patch as not measured.
  tail, step_size = cached_tail_patch(
    steps,
    records,
    corpus,
    queries,
    loaded,
    methods=[m for m in methods if m != SCANN],
    limit=options.tailpatch_queries,
    step_size=options.tailpatch_step_size,
    variants=options.tailpatch_variants,
  )
  first = next(iter(configs))
  table = per_query_metrics(records, methods, tail, k=options.k)
  for method, values in agreement.items():
    table[method].update(values)
  if SCANN in indexes:
    for method, values in scann_recall(records).items():
      table[method].update(values)
  summary = metrics_lib.summarize(
    table, groups=query_groups(records, queries, options.group_by)
  )
  meta = {
    "queries": len(records),
    "tailpatch_queries": min(
      options.tailpatch_queries or len(records), len(records)
    ),
    "corpus_size": len(corpus),
    "dim": store_lib.EncodingStore(
      os.path.join(options.output_dir, "stores", _key(configs[first]))
    ).dim,
    "exact": exact_note or "whole corrected gradients, unit norm, no R",
    "hessians": hessian_summaries(options.output_dir),
    "scann": scann_summary(indexes),
    "step_size": step_size,
    "step": (
      "one step of the checkpoint's optimizer, its state restored"
      if loaded.opt_state is not None
      else "one plain SGD step (the checkpoint has no optimizer state)"
    ),
    "model_accuracy": float(np.mean([r["correct"] for r in records])),
    "tailpatch_variants": list(options.tailpatch_variants),
    "correction": configs.get(
      "trackstar", next(iter(configs.values()))
    ).correction.kind,
    "factored": options.factored,
    "steps": {"ran": steps.ran, "skipped": steps.skipped},
  }
  write_outputs(options, records, summary, meta)
  relevant, other = (
    score_distribution(options, configs, indexes, loaded, queries, "trackstar")
    if "trackstar" in configs
    else (np.zeros(0), np.zeros(0))
  )
  plots_lib.write_plots(
    summary, relevant, other, output_dir=options.output_dir, k=options.k
  )
  meta["seconds"] = time.perf_counter() - start
  results = {"meta": meta, "summary": summary}
  with files.open(os.path.join(options.output_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  return results


def write_outputs(options, records, summary, meta) -> None:
  report_lib.write_report_jsonl(
    records, os.path.join(options.output_dir, "report.jsonl")
  )
  report_lib.write_report_html(
    records,
    os.path.join(options.output_dir, "report.html"),
    title="trak_jax fact tracing",
    k=options.k,
  )
  with files.open(os.path.join(options.output_dir, "results.md"), "w") as f:
    f.write(results_markdown(summary, meta, k=options.k))


def evaluate(
  *,
  make_pipeline: Callable[[], Any],
  corpus: str,
  queries: str,
  checkpoint: str,
  output_dir: str,
  dim: int | None = None,
  tailpatch_queries: int | None = None,
  tailpatch_step_size: float | None = None,
  tailpatch_variants: tuple[str, ...] = ("checkpoint",),
  hessian_mix: float | None = None,
  group_by: Sequence[str] = ("frequency_bucket",),
  scann: bool = True,
  resume: bool = True,
) -> dict[str, Any]:
  """Runs the evaluation with default settings, prints the table.

  `dim` is d (None: the projection's default); `hessian_mix` is
  TrackStar's λ (None: the k-th-eigenvalue rule); `tailpatch_step_size`
  the learning rate of tail-patch's step (None: the checkpoint's);
  `tailpatch_variants` its steps (the first is the headline); `scann`
  adds the row `trackstar_scann` (TrackStar searched through ScaNN);
  `resume` skips the steps that finished before (`Steps`).
  """
  options = EvaluateOptions(
    corpus=corpus,
    queries=queries,
    checkpoint=checkpoint,
    output_dir=output_dir,
    projection=(
      projection_lib.ProjectionSpec()
      if dim is None
      else projection_lib.ProjectionSpec(dim=dim)
    ),
    hessian=hessian_core.HessianSpec(mix=hessian_mix),
    tailpatch_queries=tailpatch_queries,
    tailpatch_step_size=tailpatch_step_size,
    tailpatch_variants=tuple(tailpatch_variants),
    group_by=tuple(group_by),
    scann=scann,
    resume=resume,
  )
  results = run_evaluation(options, make_pipeline=make_pipeline)
  with files.open(os.path.join(output_dir, "results.md")) as f:
    print(f.read())
  print(f"report: {output_dir}/report.html")
  return results
