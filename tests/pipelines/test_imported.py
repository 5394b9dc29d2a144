"""An imported Hugging Face model through the whole evaluation.

A random Qwen2 (grouped-query attention, q/k/v biases) with a byte-level BPE
tokenizer of the tiny corpus, written in Hugging Face's layout and imported
with `trak-jax-import`: no optimizer state, so the correction is estimated
and tail-patch takes plain SGD steps. Every job runs on it unchanged.
"""

import json

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import evaluate_exact, evaluate_lib
from trak_jax import data as data_lib
from trak_jax import projection as projection_lib
from trak_jax import report as report_lib
from trak_jax import store as store_lib
from trak_jax.hf import importer, synthetic

METHODS = ("trackstar",)


@pytest.fixture(scope="module")
def imported_eval(tiny_run, tmp_path_factory):
  root = tmp_path_factory.mktemp("imported")
  texts = [e.text for e in data_lib.read_corpus(tiny_run["corpus"])]
  synthetic.write_checkpoint(
    root / "hf", texts, model_type="qwen2", vocab_size=400, num_layers=2
  )
  importer.import_checkpoint(
    root / "hf", str(root / "model"), max_len=32, learning_rate=1e-3
  )
  options = evaluate_lib.EvaluateOptions(
    corpus=tiny_run["corpus"],
    queries=tiny_run["queries"],
    checkpoint=str(root / "model"),
    output_dir=str(root / "eval"),
    methods=METHODS,
    projection=projection_lib.ProjectionSpec(dim=128),
    tailpatch_queries=4,
    num_shards=1,
    batch_size=16,
    scann=False,
  )
  results = evaluate_lib.run_evaluation(options, make_pipeline=TestPipeline)
  return root, results


def test_every_method_ranks_the_corpus_of_the_imported_model(
  imported_eval, tiny_run
):
  root, results = imported_eval
  corpus_ids = {e.id for e in data_lib.read_corpus(tiny_run["corpus"])}
  records = report_lib.read_report_jsonl(str(root / "eval" / "report.jsonl"))
  assert len(records) == results["meta"]["queries"] > 0
  for record in records:
    for method in (*METHODS, evaluate_exact.EXACT):
      ids = [p["id"] for p in record["results"][method]["proponents"]]
      assert len(ids) == 10 and set(ids) <= corpus_ids, method
  for method in (*METHODS, evaluate_exact.EXACT):
    assert 0 < results["summary"]["all"][method]["mrr"]["mean"] <= 1


def test_without_optimizer_state_v_is_estimated_and_tail_patch_is_sgd(
  imported_eval,
):
  root, results = imported_eval
  stores = sorted((root / "eval" / "stores").iterdir())
  kinds = {
    store_lib.EncodingStore(str(s)).manifest["encoder_config"]["correction"][
      "kind"
    ]
    for s in stores
  }
  assert kinds == {"estimated"}
  assert "SGD" in results["meta"]["step"]
  assert results["meta"]["step_size"] == pytest.approx(1e-3)
  tail = results["summary"]["all"]["trackstar"]["tail_patch"]["mean"]
  assert np.isfinite(tail)
  written = json.loads((root / "eval" / "results.json").read_text())
  assert written["meta"]["step"] == results["meta"]["step"]


def test_an_import_without_a_step_size_fails_before_any_job(
  imported_eval, tiny_run, tmp_path
):
  root, _ = imported_eval
  synthetic_dir = root / "hf"
  importer.import_checkpoint(synthetic_dir, str(tmp_path / "model"))
  options = evaluate_lib.EvaluateOptions(
    corpus=tiny_run["corpus"],
    queries=tiny_run["queries"],
    checkpoint=str(tmp_path / "model"),
    output_dir=str(tmp_path / "eval"),
  )
  with pytest.raises(ValueError, match="tailpatch_step_size"):
    evaluate_lib.run_evaluation(options, make_pipeline=TestPipeline)
  assert not (tmp_path / "eval" / "stores").exists()
