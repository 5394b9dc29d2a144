"""The score job: the corpus scored while encoded equals store -> index ->
retrieve."""

import dataclasses
import json
import os

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from pipelines import encode_lib, index_lib, retrieve_lib, score_lib
from tests.pipelines.conftest import STORE_CONFIG
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import hessian as hessian_core
from trak_jax import index as index_core
from trak_jax import projection as projection_lib
from trak_jax import report as report_lib
from trak_jax import store as store_lib

CONFIG = STORE_CONFIG
K = 8  # Not the default 10, so the report's metrics must follow the job's k.
ATOL = 1e-5


def _score_options(tiny_run, output_dir, hessian_dir, config=CONFIG):
  return score_lib.ScoreOptions(
    encode=encode_lib.EncodeOptions(
      corpus=tiny_run["corpus"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(output_dir),
      encoder_config=config,
      num_shards=3,  # Not the store's 2: sharding must not matter.
      batch_size=16,
    ),
    queries=tiny_run["queries"],
    hessian_dir=str(hessian_dir),
    method="trackstar",
    k=K,
    query_batch_size=16,
  )


@pytest.fixture(scope="module")
def paths(tiny_run, trackstar_store, tmp_path_factory):
  """The fixture store's exact index and retrieval report, and the score
  job's report on the same corpus, queries and Hessian."""
  root = tmp_path_factory.mktemp("score")
  index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=str(trackstar_store["store"]),
      hessian_dir=str(trackstar_store["hessian_dir"]),
      output_dir=str(root / "index"),
      encoder_config=CONFIG,
      kind="exact",
    ),
  )
  retrieve_lib.run_pipeline(
    TestPipeline(),
    options=retrieve_lib.RetrieveOptions(
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      corpus=tiny_run["corpus"],
      indexes=(("trackstar", str(root / "index")),),
      output_dir=str(root / "retrieve"),
      k=K,
      batch_size=16,
    ),
  )
  store = store_lib.EncodingStore(str(trackstar_store["store"]))
  info_path = root / "score" / score_lib.INFO

  def is_what_score_json_records(infos):
    (info,) = infos
    counts = info["counts"]
    if not (
      json.loads(json.dumps(info)) == json.load(open(info_path))
      and counts["scored"] == len(store)
      and counts["read"] == store.manifest["counts"]["read"]
    ):
      raise BeamAssertException(f"{info} is not the job's score.json")

  with TestPipeline() as pipeline:
    written = pipeline | score_lib.Score(
      _score_options(tiny_run, root / "score", trackstar_store["hessian_dir"])
    )
    assert_that(written, is_what_score_json_records)
  info = json.load(open(info_path))
  return {**trackstar_store, "root": root, "info": info}


def _records(directory) -> dict[str, dict]:
  records = report_lib.read_report_jsonl(str(directory / "report.jsonl"))
  return {r["query_id"]: r for r in records}


def _true_scores(paths, tiny_run) -> dict[str, dict[str, float]]:
  """{query id: {example id: score}}: every stored encoding, finished,
  against each finished query encoding, in float64."""
  batch = store_lib.EncodingStore(str(paths["store"])).load()
  preconditioner, _ = hessian_core.load(str(paths["hessian_dir"]))
  corpus = np.asarray(
    encoder_lib.finish(
      np.asarray(batch.vectors, np.float32), preconditioner, normalize=True
    ),
    np.float64,
  )
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  encoder, _ = retrieve_lib.load_encoder(loaded, str(paths["root"] / "index"))
  queries = data_lib.read_queries(tiny_run["queries"])
  features = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=16,
    max_len=loaded.model_config.max_len,
  ).features
  scores = corpus @ np.asarray(features, np.float64).T  # [n, queries]
  return {
    q.id: dict(zip(batch.ids, scores[:, i].tolist(), strict=True))
    for i, q in enumerate(queries)
  }


def _ranked(record) -> list[tuple[str, float]]:
  proponents = record["results"]["trackstar"]["proponents"]
  return [(p["id"], p["score"]) for p in proponents]


def test_score_job_equals_store_index_retrieve(paths, tiny_run):
  scored = _records(paths["root"] / "score")
  retrieved = _records(paths["root"] / "retrieve")
  assert sorted(scored) == sorted(retrieved)
  assert len(scored) == len(data_lib.read_queries(tiny_run["queries"]))
  true_scores = _true_scores(paths, tiny_run)
  identical = 0
  for query_id, expected_record in retrieved.items():
    found, expected = _ranked(scored[query_id]), _ranked(expected_record)
    assert len(found) == len(expected) == K
    assert len({i for i, _ in found}) == K
    np.testing.assert_allclose(
      [s for _, s in found], [s for _, s in expected], atol=ATOL
    )
    # Ids differ only where float32 rounding reorders near-ties: then the
    # id found truly scores what the id expected there scores.
    for (found_id, _), (expected_id, expected_score) in zip(
      found, expected, strict=True
    ):
      if found_id != expected_id:
        assert true_scores[query_id][found_id] == pytest.approx(
          expected_score, abs=ATOL
        )
    if [i for i, _ in found] == [i for i, _ in expected]:
      identical += 1
      assert _without_scores(scored[query_id]) == _without_scores(
        expected_record
      )
  assert identical >= len(retrieved) // 2  # Near-ties are rare.


def _without_scores(record) -> dict:
  """A report record with its proponents' scores left out."""
  results = {
    method: {
      **result,
      "proponents": [
        {k: v for k, v in p.items() if k != "score"}
        for p in result["proponents"]
      ],
    }
    for method, result in record["results"].items()
  }
  return {**record, "results": results}


def test_score_job_writes_no_store_and_completes_last(paths, tiny_run):
  directory = paths["root"] / "score"
  assert sorted(os.listdir(directory)) == sorted(
    [
      "COMPLETED",
      "metrics.json",
      "rejected.jsonl",
      "report.html",
      "report.jsonl",
      score_lib.INFO,
    ]
  )
  info = paths["info"]
  assert info == json.load(open(directory / score_lib.INFO))
  store = store_lib.EncodingStore(str(paths["store"]))
  num_lines = sum(1 for _ in open(tiny_run["corpus"]))
  counts = info["counts"]
  assert counts["read"] == num_lines == store.manifest["counts"]["read"]
  assert counts["scored"] == len(store)
  assert counts["scored"] + counts["rejected"] == counts["read"]
  rejected = open(directory / "rejected.jsonl").read()
  assert rejected == open(paths["store"] / "rejected.jsonl").read()
  assert info["fingerprint"] == store.fingerprint.to_dict()
  assert (
    info["hessian"]["preconditioner_digest"]
    == (paths["hessian"]["preconditioner_digest"])
  )
  completed = os.stat(directory / "COMPLETED").st_mtime_ns
  for name in os.listdir(directory):
    assert os.stat(directory / name).st_mtime_ns <= completed
  metrics = json.load(open(directory / "metrics.json"))
  assert metrics["queries"] == counts["queries"]
  method = next(v for v in metrics.values() if isinstance(v, dict))
  assert set(method) == {"mrr", f"recall@{K}", f"precision@{K}"}


def test_the_layout_comes_from_the_hessian(paths):
  assert CONFIG.projection.needs_energy
  config = score_lib.with_hessian_layout(CONFIG, str(paths["hessian_dir"]))
  store = store_lib.EncodingStore(str(paths["store"]))
  recorded = projection_lib.ProjectionSpec.from_dict(
    store.manifest["encoder_config"]["projection"]
  )
  assert config.projection.block_energy == recorded.block_energy
  assert config.projection.block_energy is not None
  assert dataclasses.replace(config, projection=CONFIG.projection) == CONFIG


def _tampered_hessian(paths, directory, **fingerprint):
  """A copy of the fixture's Hessian whose fingerprint has other fields."""
  directory.mkdir()
  source = paths["hessian_dir"]
  (directory / "hessian.npz").write_bytes((source / "hessian.npz").read_bytes())
  info = json.load(open(source / "hessian.json"))
  info["fingerprint"].update(fingerprint)
  json.dump(info, open(directory / "hessian.json", "w"))
  files.write_marker(str(directory))
  return directory


def test_a_mismatched_hessian_is_refused(paths, tiny_run, tmp_path):
  bad = _tampered_hessian(paths, tmp_path / "bad", seed=99)
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match=f"hessian {bad}.*'seed'"
  ):
    score_lib.run_pipeline(
      TestPipeline(),
      options=_score_options(tiny_run, tmp_path / "out", bad),
    )
  other = dataclasses.replace(
    CONFIG, projection=projection_lib.ProjectionSpec(dim=128, seed=4)
  )
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'projection'"
  ):
    score_lib.run_pipeline(
      TestPipeline(),
      options=_score_options(
        tiny_run, tmp_path / "out", paths["hessian_dir"], other
      ),
    )
  assert not (tmp_path / "out" / "COMPLETED").exists()
  assert not (tmp_path / "out" / "report.jsonl").exists()


def test_a_worker_refuses_a_hessian_refitted_during_the_job(
  paths, tiny_run, tmp_path
):
  options, fingerprint, _ = score_lib.prepare(
    _score_options(tiny_run, tmp_path / "out", paths["hessian_dir"])
  )
  shard = score_lib.EncodeAndScoreShard(options, fingerprint, "0" * 16)
  with pytest.raises(index_core.HessianMismatchError, match="0{16}"):
    shard.setup()
