"""A small end-to-end evaluation run."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import (
  encode_lib,
  evaluate_exact,
  evaluate_influence,
  evaluate_lib,
  evaluate_tables,
  hessian_lib,
  index_lib,
  retrieve_lib,
)
from trak_jax import data as data_lib
from trak_jax import projection as projection_lib
from trak_jax import report as report_lib
from trak_jax.eval import exact as exact_lib
from trak_jax.eval import metrics as metrics_lib


@pytest.fixture(scope="module")
def evaluation_options(tiny_run, tmp_path_factory):
  """The options the `evaluation` fixture runs with."""
  return evaluate_lib.EvaluateOptions(
    corpus=tiny_run["corpus"],
    queries=tiny_run["queries"],
    checkpoint=tiny_run["checkpoint"],
    output_dir=str(tmp_path_factory.mktemp("eval")),
    methods=("grad_dot", "trackstar"),
    projection=projection_lib.ProjectionSpec(dim=128),
    tailpatch_queries=4,
    tailpatch_variants=("checkpoint", "checkpoint_noclip", "sgd"),
    num_shards=1,
    batch_size=16,
  )


@pytest.fixture(scope="module")
def evaluation(evaluation_options):
  results = evaluate_lib.run_evaluation(
    evaluation_options, make_pipeline=TestPipeline
  )
  return pathlib.Path(evaluation_options.output_dir), results


def test_evaluation_writes_every_output(evaluation):
  out, results = evaluation
  for name in (
    "results.json",
    "results.md",
    "report.html",
    "report.jsonl",
    "metrics_by_method.png",
    "metrics_by_bucket.png",
    "score_distribution.png",
  ):
    assert (out / name).stat().st_size > 0, name
  assert (out / "metrics_by_method.png").read_bytes()[:4] == b"\x89PNG"
  assert json.load(open(out / "results.json")) == json.loads(
    json.dumps(results)
  )
  table = (out / "results.md").read_text()
  for method in (
    "bm25",
    "grad_dot",
    "trackstar",
    "trackstar_scann",
    "ground_truth",
  ):
    assert f"| {method} |" in table


def test_summary_equals_the_report_records(evaluation, tiny_run):
  out, results = evaluation
  records = report_lib.read_report_jsonl(str(out / "report.jsonl"))
  assert set(records[0]["results"]) == {
    "bm25",
    "grad_dot",
    "trackstar",
    "trackstar_scann",
    "exact",
  }
  for method in ("bm25", "trackstar"):
    rankings = [
      [p["id"] for p in r["results"][method]["proponents"]] for r in records
    ]
    values = metrics_lib.per_query(
      rankings, [r["relevant_ids"] for r in records]
    )
    overall = results["summary"]["all"][method]
    assert overall["mrr"]["mean"] == pytest.approx(values["mrr"].mean())
    assert overall["mrr"]["low"] <= overall["mrr"]["mean"]
    assert overall["mrr"]["mean"] <= overall["mrr"]["high"]
    assert overall["recall@10"]["mean"] == pytest.approx(
      values["recall@10"].mean()
    )
  # Tail-patch ran on the first four queries only.
  assert results["summary"]["all"]["trackstar"]["tail_patch"]["n"] == 4
  assert results["meta"]["tailpatch_queries"] == 4
  # Per-bucket groups partition the queries.
  buckets = [g for g in results["summary"] if g.startswith("frequency_bucket=")]
  sizes = [results["summary"][g]["bm25"]["mrr"]["n"] for g in buckets]
  assert sum(sizes) == len(records)
  # The exact reference agrees with itself; the others within [-1, 1].
  exact = results["summary"]["all"]["exact"]
  assert exact["overlap@10_exact"]["mean"] == pytest.approx(1.0)
  assert exact["spearman_exact"]["mean"] == pytest.approx(1.0)
  for method in ("grad_dot", "trackstar"):
    row = results["summary"]["all"][method]
    assert 0.0 <= row["overlap@10_exact"]["mean"] <= 1.0
    assert -1.0 <= row["spearman_exact"]["mean"] <= 1.0
  (hessian,) = [
    h for n, h in results["meta"]["hessians"].items() if n.endswith("mixed")
  ]
  assert 0.0 <= hessian["mix"] <= 1.0
  assert hessian["eigen_k"] <= min(hessian["rank_train"], hessian["rank_eval"])


def test_results_split_by_a_named_field(tiny_run):
  queries = data_lib.read_queries(tiny_run["queries"])
  records = [
    {"query_id": q.id, "correct": i % 2 == 0} for i, q in enumerate(queries)
  ]
  field = next(iter(queries[0].extra))
  groups = evaluate_tables.query_groups(records, queries, [field])
  values = {str(q.extra.get(field)) for q in queries}
  named = [g for g in groups if g.startswith(f"{field}=")]
  assert len(named) == len(values)
  assert sum(groups[g].sum() for g in named) == len(queries)
  with pytest.raises(ValueError, match="no query has the field 'colour'"):
    evaluate_tables.query_groups(records, queries, ["colour"])


def test_bm25_finds_stating_passages_on_facts(evaluation):
  _, results = evaluation
  # Queries contain the subject and the object: BM25 should find a passage
  # that states the fact for most of them.
  assert results["summary"]["all"]["bm25"]["recall@10"]["mean"] > 0.8
  assert np.isfinite(results["meta"]["step_size"])


def test_scann_row_finds_most_of_exact_search(evaluation):
  out, results = evaluation
  overall = results["summary"]["all"]
  metric = evaluate_exact.RECALL_VS_EXACT_SEARCH
  scann = overall[evaluate_exact.SCANN]
  # ScaNN is approximate (quantised, then re-ordered): on the tiny corpus it
  # finds most of exact search's top-10, as tests/pipelines/test_stages.py
  # bounds it, but not necessarily in the same order.
  assert 0.7 <= scann[metric]["mean"] <= 1.0
  assert scann[metric]["n"] == results["meta"]["queries"]
  assert overall["trackstar"][metric]["mean"] == pytest.approx(1.0)
  assert 0.0 <= scann["mrr"]["mean"] <= 1.0
  assert 0.0 <= scann["overlap@10_exact"]["mean"] <= 1.0
  # Not measured for ScaNN: tail-patch and the whole-corpus Spearman.
  assert scann["tail_patch"]["n"] == 0
  assert "spearman_exact" not in scann
  # The overall table comes first, then the per-group ones.
  row = next(
    line
    for line in (out / "results.md").read_text().splitlines()
    if line.startswith("| trackstar_scann |")
  )
  cells = [c.strip() for c in row.strip("|").split("|")][1:]
  by_metric = dict(zip(evaluate_tables.METRICS, cells, strict=True))
  assert by_metric["tail_patch"] == "–"
  assert by_metric["spearman_exact"] == "–"
  assert by_metric[metric].startswith(f"{scann[metric]['mean']:.3f}")
  assert results["meta"]["scann"]["settings"]["reorder_k"] > 0


def test_recall_vs_exact_search_on_hand_made_rankings():
  recall = evaluate_exact.recall_vs_exact_search
  exact = ["a", "b", "c", "d"]
  assert recall(["d", "c", "b", "a"], exact) == 1.0  # order does not count
  assert recall(["a", "x", "c", "y"], exact) == 0.5
  assert recall(["x", "y"], exact) == 0.0
  # Only the top k of each side: "c" is past k = 2 in the found list.
  assert recall(["a", "x", "c"], exact, k=2) == 0.5
  # An exact top-k shorter than k (a small index) is the denominator.
  assert recall(["b", "a", "x"], ["a", "b"], k=3) == 1.0
  assert np.isnan(recall(["a"], []))


def test_factored_v_is_an_option_with_its_own_stores():
  options = evaluate_lib.EvaluateOptions(
    corpus="c",
    queries="q",
    checkpoint="m",
    output_dir="o",
    methods=("grad_dot", "trackstar"),
    factored=True,
  )
  configs = evaluate_lib.method_configs(options, "adamw")
  assert configs["trackstar"].correction.factored
  assert not configs["grad_dot"].correction.factored  # No V to factor.
  keys = {evaluate_lib._key(c) for c in configs.values()}
  assert keys == {"none", "adam-factored"}
  with pytest.raises(ValueError, match="'factored'"):
    evaluate_lib.method_configs(options, "adafactor")


def test_trackstar_one_sided_reads_trackstar_s_store_with_its_own_hessian():
  assert "trackstar_one_sided" not in evaluate_lib.GRADIENT_METHODS
  options = evaluate_lib.EvaluateOptions(
    corpus="c",
    queries="q",
    checkpoint="m",
    output_dir="o",
    methods=("trackstar", "trackstar_one_sided"),
  )
  configs = evaluate_lib.method_configs(options, "adafactor")
  both, one = configs["trackstar"], configs["trackstar_one_sided"]
  assert evaluate_lib._key(both) == evaluate_lib._key(one) == "adafactor"
  assert evaluate_lib._hessian_key(both) == ("adafactor", "mixed")
  assert evaluate_lib._hessian_key(one) == (
    "adafactor",
    "mixed",
    "queries",
    "none",
  )


def test_influence_table_has_every_variant_and_top_k(evaluation):
  out, results = evaluation
  table = (out / "results.md").read_text()
  assert "## Influence (tail-patch)" in table
  overall = results["summary"]["all"]
  for variant in ("checkpoint", "checkpoint_noclip", "sgd"):
    for measure in ("dp", "dlogp"):
      for k in (1, 3, 5, 10):
        name = evaluate_influence.influence_metric(variant, measure, k)
        assert name in table
        for method in ("trackstar", "exact", "ground_truth"):
          assert overall[method][name]["n"] == 4, (method, name)
  # The headline column is the first variant's Δlog p over the top 10.
  for method in ("trackstar", "exact", "bm25"):
    headline = overall[method]["tail_patch"]["mean"]
    assert headline == pytest.approx(
      overall[method]["tp_checkpoint_dlogp@10"]["mean"], rel=1e-6
    )


def test_a_rerun_resumes_after_the_finished_steps(
  evaluation, evaluation_options, monkeypatch
):
  out, results = evaluation
  # Other tests read the first run's outputs: put them back afterwards.
  written = {p: p.read_bytes() for p in out.iterdir() if p.is_file()}

  def must_not_run(*args, **kwargs):
    raise AssertionError("a finished step ran again")

  for module in (
    encode_lib,
    hessian_lib,
    index_lib,
    retrieve_lib,
  ):
    monkeypatch.setattr(module, "run_pipeline", must_not_run)
  monkeypatch.setattr(exact_lib, "exact_scores", must_not_run)
  real_tail_patch = evaluate_influence.tail_patch
  monkeypatch.setattr(evaluate_influence, "tail_patch", must_not_run)
  options = evaluation_options
  try:
    again = evaluate_lib.run_evaluation(options, make_pipeline=TestPipeline)
    assert again["meta"]["steps"]["ran"] == []
    assert set(again["meta"]["steps"]["skipped"]) >= {
      "encode-none",
      "retrieve",
      "exact",
      "tailpatch",
    }
    # As JSON: NaN (no tail-patch past the limit) equals itself there.
    assert json.dumps(again["summary"], sort_keys=True) == json.dumps(
      results["summary"], sort_keys=True
    )
    # Another tail-patch limit: only tail-patch runs again.
    monkeypatch.setattr(evaluate_influence, "tail_patch", real_tail_patch)
    fewer = evaluate_lib.run_evaluation(
      dataclasses.replace(options, tailpatch_queries=2),
      make_pipeline=TestPipeline,
    )
    assert fewer["meta"]["steps"]["ran"] == ["tailpatch"]
    tail = fewer["summary"]["all"]["trackstar"]["tail_patch"]
    assert tail["n"] == 2
    # A step without its record (failed, stopped) runs again, and what
    # reads it too.
    (out / "steps" / "retrieve.json").unlink()
    monkeypatch.setattr(
      retrieve_lib,
      "run_pipeline",
      lambda *args, **kwargs: None,  # Its report is already there.
    )
    redone = evaluate_lib.run_evaluation(
      dataclasses.replace(options, tailpatch_queries=2),
      make_pipeline=TestPipeline,
    )
    assert redone["meta"]["steps"]["ran"] == ["retrieve", "tailpatch"]
  finally:
    for path, content in written.items():
      path.write_bytes(content)
