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
(the exact reference, tail-patch) are `evaluate_steps.Steps`: recorded in
steps/ once finished, so a rerun with the same output_dir resumes after the
last step that finished with the same inputs (`EvaluateOptions.resume`).

This module is the sequence of steps; their work is below it:
`evaluate_exact` (BM25, the exact reference and the agreement with it),
`evaluate_influence` (tail-patch) and `evaluate_tables` (the metric tables
and results.md).
"""

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines import (
  encode_lib,
  evaluate_exact,
  evaluate_influence,
  evaluate_steps,
  evaluate_tables,
  hessian_lib,
  index_lib,
  retrieve_lib,
)
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import hessian as hessian_core
from trak_jax import projection as projection_lib
from trak_jax import report as report_lib
from trak_jax import store as store_lib
from trak_jax.eval import metrics as metrics_lib
from trak_jax.eval import plots as plots_lib

# grad_dot_corrected and trackstar_one_sided are selectable (`methods`) but
# not defaults: their cost in the demo's time is not measured yet
# (trackstar_one_sided reuses trackstar's store, but fits one more Hessian
# and retrieves with one more method).
NOT_DEFAULT = ("grad_dot_corrected", "trackstar_one_sided")
GRADIENT_METHODS = tuple(p for p in encoder_lib.PRESETS if p not in NOT_DEFAULT)


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


def _build_index(
  make_pipeline,
  options: index_lib.IndexOptions,
  steps: evaluate_steps.Steps,
  after,
) -> str:
  name = os.path.basename(options.output_dir)

  def job():
    evaluate_steps.log(f"{options.kind} index {name}")
    index_lib.run_pipeline(make_pipeline(), options=options)

  steps.run(f"index-{name}", options, job, after=after)
  return options.output_dir


def build_indexes(
  options: EvaluateOptions,
  configs: dict[str, encoder_lib.EncoderConfig],
  make_pipeline: Callable[[], Any],
  steps: evaluate_steps.Steps,
  *,
  digest: str,
) -> dict[str, str]:
  """Runs encode, hessian and index jobs; returns method -> index dir.

  Each job is a step of `steps` (skipped where it finished before from the
  same options and checkpoint `digest`, its header's); an index reads its
  store's and Hessian's steps.

  Every method gets an exact index; TrackStar also a ScaNN one over the same
  store and Hessian (`evaluate_exact.SCANN`, right after it) unless
  `options.scann` is off. ScaNN's settings are `index.ScannSpec`'s
  defaults: no partitioning tree, so it also builds on stores too small to
  partition.
  """
  out = options.output_dir
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
      evaluate_steps.log(f"encode corpus (correction {kind})")
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
          evaluate_steps.log(f"fit hessian {hkey}")
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
    if name == evaluate_exact.TRACKSTAR and options.scann:
      indexes[evaluate_exact.SCANN] = _build_index(
        make_pipeline,
        dataclasses.replace(
          exact,
          output_dir=os.path.join(out, "indexes", evaluate_exact.SCANN),
          kind="scann",
        ),
        steps,
        reads,
      )
  return indexes


def run_evaluation(
  options: EvaluateOptions, *, make_pipeline: Callable[[], Any]
) -> dict[str, Any]:
  """Runs every stage and writes results; returns results.json's content."""
  start = time.perf_counter()
  files.makedirs(options.output_dir)
  header = checkpoint_lib.read_header(options.checkpoint)
  evaluate_influence.check_step_size(options, header)
  configs = method_configs(options, optimizer_name(header))
  steps = evaluate_steps.Steps(options.output_dir, resume=options.resume)
  indexes = build_indexes(
    options, configs, make_pipeline, steps, digest=header.digest
  )
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
    evaluate_steps.log("retrieve with every method")
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
  evaluate_steps.log("BM25")
  evaluate_exact.add_bm25(records, corpus, queries, k=options.k)
  methods = [evaluate_exact.BM25, *indexes]
  loaded = checkpoint_lib.load_checkpoint(options.checkpoint)
  agreement, exact_note = evaluate_exact.add_exact(
    records,
    corpus,
    queries,
    loaded,
    options,
    indexes,
    steps,
    correction=options.correction
    or checkpoint_correction(optimizer_name(loaded)),
  )
  if exact_note is None:
    methods.append(evaluate_exact.EXACT)
  evaluate_steps.log("tail-patch")
  # ScaNN's proponents are nearly TrackStar's: tail-patch (the slow part)
  # leaves them out, and results.md shows its tail_patch as not measured.
  tail, step_size = evaluate_influence.cached_tail_patch(
    steps,
    records,
    corpus,
    queries,
    loaded,
    methods=[m for m in methods if m != evaluate_exact.SCANN],
    limit=options.tailpatch_queries,
    step_size=options.tailpatch_step_size,
    variants=options.tailpatch_variants,
  )
  first = next(iter(configs))
  table = evaluate_tables.per_query_metrics(records, methods, tail, k=options.k)
  for method, values in agreement.items():
    table[method].update(values)
  if evaluate_exact.SCANN in indexes:
    for method, values in evaluate_exact.scann_recall(records).items():
      table[method].update(values)
  summary = metrics_lib.summarize(
    table,
    groups=evaluate_tables.query_groups(records, queries, options.group_by),
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
    "hessians": evaluate_tables.hessian_summaries(options.output_dir),
    "scann": evaluate_exact.scann_summary(indexes),
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
    evaluate_exact.score_distribution(
      options, configs, indexes, loaded, queries, "trackstar"
    )
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
    f.write(evaluate_tables.results_markdown(summary, meta, k=options.k))


def evaluate(
  options: EvaluateOptions, *, make_pipeline: Callable[[], Any]
) -> dict[str, Any]:
  """`run_evaluation`, then prints the table and where the report is."""
  results = run_evaluation(options, make_pipeline=make_pipeline)
  with files.open(os.path.join(options.output_dir, "results.md")) as f:
    print(f.read())
  print(f"report: {options.output_dir}/report.html")
  return results
