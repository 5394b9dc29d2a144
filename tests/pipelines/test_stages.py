"""Hessian, index and retrieval jobs on a tiny store."""

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from pipelines import hessian_lib, index_lib, retrieve_lib
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


@pytest.fixture(scope="module")
def stages(trackstar_store, tmp_path_factory):
  root = tmp_path_factory.mktemp("stages")
  index_info = index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=str(trackstar_store["store"]),
      hessian_dir=str(trackstar_store["hessian_dir"]),
      output_dir=str(root / "index"),
      encoder_config=CONFIG,
    ),
  )
  return {**trackstar_store, "root": root, "index": index_info}


def test_hessian_job_matches_a_direct_fit(stages, tiny_run):
  info = stages["hessian"]
  store = store_lib.EncodingStore(str(stages["store"]))
  assert info["train_examples"] == len(store)  # sample >= store: all of it
  assert 0 < info["mix"] < 1 and info["eigen_k"] >= 1
  arrays = np.load(stages["hessian_dir"] / "hessian.npz")
  phi = store.load().vectors.astype(np.float64)
  full = phi.T @ phi / len(phi)
  # Every block of R has at least samples_per_dim samples per dimension.
  sizes = info["block_sizes"]
  assert sum(sizes) == store.dim and max(sizes) <= len(store) / 2
  start = 0
  for i, size in enumerate(sizes):
    np.testing.assert_allclose(
      arrays[f"train_{i}"],
      full[start : start + size, start : start + size],
      rtol=1e-6,
    )
    start += size
  expected = hessian_core.auto_mix(
    [arrays[f"train_{i}"] for i in range(len(sizes))],
    [arrays[f"eval_{i}"] for i in range(len(sizes))],
    k=info["eigen_k"],
  )
  assert info["mix"] == pytest.approx(expected)
  assert info["eigen_k"] <= min(info["rank_train"], info["rank_eval"])


def test_index_finishes_encodings_and_measures_recall(stages):
  index = index_core.Index.load(str(stages["root"] / "index"))
  norms = np.linalg.norm(index.vectors, axis=1)
  np.testing.assert_allclose(norms, 1.0, rtol=1e-4)  # normalised
  recall = stages["index"]["recall_at_10"]
  assert recall["recall"] >= 0.9 and recall["queries"] > 0
  store = store_lib.EncodingStore(str(stages["store"])).load()
  preconditioner, _ = hessian_core.load(str(stages["hessian_dir"]))
  order = np.argsort(store.ids)
  expected = np.asarray(
    encoder_lib.finish(
      store.vectors[order].astype(np.float32), preconditioner, normalize=True
    )
  )
  np.testing.assert_allclose(index.vectors, expected, atol=1e-4)
  assert index.ids == sorted(store.ids)


def _check_scann_against_exact(records, stages, tiny_run):
  """ScaNN finds most of the exact top-10, with exact re-ranked scores.

  Which near-tied neighbours ScaNN's quantised pass keeps (and their order)
  is not guaranteed; its recall of the exact top-10 and the exactness of
  the scores it re-ranks with are.
  """
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  encoder, index = retrieve_lib.load_method(
    loaded, str(stages["root"] / "index")
  )
  queries = data_lib.read_queries(tiny_run["queries"])
  encoded = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=16,
    max_len=loaded.model_config.max_len,
  )
  features = dict(
    zip([q.id for q in queries], np.asarray(encoded.features), strict=True)
  )
  row = {example_id: i for i, example_id in enumerate(index.ids)}
  recalls = []
  for record in records:
    scann = record["results"]["trackstar"]["proponents"]
    exact = record["results"]["exact"]["proponents"]
    found = {p["id"] for p in scann} & {p["id"] for p in exact}
    recalls.append(len(found) / len(exact))
    scores = [p["score"] for p in scann]
    assert scores == sorted(scores, reverse=True)
    vectors = index.vectors[[row[p["id"]] for p in scann]]
    np.testing.assert_allclose(
      scores, vectors @ features[record["query_id"]], atol=1e-4
    )
  assert np.mean(recalls) >= 0.7


def test_retrieve_writes_report_metrics_and_page(stages, tiny_run, tmp_path):
  out = tmp_path / "report"
  exact_dir = tmp_path / "exact"
  index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=str(stages["store"]),
      hessian_dir=str(stages["hessian_dir"]),
      output_dir=str(exact_dir),
      encoder_config=CONFIG,
      kind="exact",
    ),
  )
  summary = retrieve_lib.run_pipeline(
    TestPipeline(),
    options=retrieve_lib.RetrieveOptions(
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      corpus=tiny_run["corpus"],
      indexes=(
        ("trackstar", str(stages["root"] / "index")),
        ("exact", str(exact_dir)),
      ),
      output_dir=str(out),
      batch_size=16,
    ),
  )
  records = report_lib.read_report_jsonl(str(out / "report.jsonl"))
  queries = [json.loads(line) for line in open(tiny_run["queries"])]
  assert [r["query_id"] for r in records] == sorted(q["id"] for q in queries)
  corpus = {
    json.loads(line)["id"]: json.loads(line)["text"]
    for line in open(tiny_run["corpus"])
  }
  for record in records:
    for method in ("trackstar", "exact"):
      proponents = record["results"][method]["proponents"]
      assert len(proponents) == 10
      for p in proponents:
        assert p["text"] == corpus[p["id"]]
        assert p["relevant"] == (p["id"] in record["relevant_ids"])
  _check_scann_against_exact(records, stages, tiny_run)
  rr = [r["results"]["trackstar"]["reciprocal_rank"] for r in records]
  assert summary["trackstar"]["mrr"]["mean"] == pytest.approx(np.mean(rr))
  metrics = json.load(open(out / "metrics.json"))
  assert metrics == summary
  html = (out / "report.html").read_text()
  assert "trackstar" in html and "<script" in html


def test_a_hessian_of_another_encoder_is_refused(stages, tiny_run, tmp_path):
  other = dataclasses.replace(
    CONFIG, projection=projection_lib.ProjectionSpec(dim=128, seed=4)
  )
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'projection'"
  ):
    hessian_lib.run_pipeline(
      TestPipeline(),
      options=hessian_lib.HessianOptions(
        store_dir=str(stages["store"]),
        queries=tiny_run["queries"],
        checkpoint=tiny_run["checkpoint"],
        output_dir=str(tmp_path / "h"),
        encoder_config=other,
      ),
    )
  # A Hessian whose recorded fingerprint differs from the store's.
  info_path = stages["hessian_dir"] / "hessian.json"
  info = json.load(open(info_path))
  bad = tmp_path / "bad_hessian"
  bad.mkdir()
  (bad / "hessian.npz").write_bytes(
    (stages["hessian_dir"] / "hessian.npz").read_bytes()
  )
  info["fingerprint"]["seed"] = 99
  json.dump(info, open(bad / "hessian.json", "w"))
  files.write_marker(str(bad))
  with pytest.raises(encoder_lib.FingerprintMismatchError, match="'seed'"):
    index_lib.run_pipeline(
      TestPipeline(),
      options=index_lib.IndexOptions(
        store_dir=str(stages["store"]),
        hessian_dir=str(bad),
        output_dir=str(tmp_path / "i"),
        encoder_config=CONFIG,
      ),
    )


def test_an_index_of_another_checkpoint_is_refused(stages, tiny_run, tmp_path):
  index_dir = tmp_path / "index"
  index = index_core.Index.load(str(stages["root"] / "index"))
  index.info["store_fingerprint"]["checkpoint_digest"] = "0" * 64
  index.save(str(index_dir))
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'checkpoint_digest'"
  ):
    retrieve_lib.load_method(loaded, str(index_dir))


def _copy_hessian(stages, directory):
  directory.mkdir()
  for name in ("hessian.npz", "hessian.json", files.COMPLETED):
    source = stages["hessian_dir"] / name
    (directory / name).write_bytes(source.read_bytes())
  return directory


def _build_index(stages, hessian_dir, output_dir, config=CONFIG):
  return index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=str(stages["store"]),
      hessian_dir=hessian_dir and str(hessian_dir),
      output_dir=str(output_dir),
      encoder_config=config,
      kind="exact",
    ),
  )


def test_an_index_records_the_fit_of_its_hessian(stages):
  preconditioner, info = hessian_core.load(str(stages["hessian_dir"]))
  recorded = stages["index"]["hessian"]
  assert recorded == {k: v for k, v in info.items() if k != "fingerprint"}
  assert recorded["preconditioner_digest"] == (
    hessian_core.preconditioner_digest(preconditioner)
  )
  assert {"mix", "eigen_k", "spec", "block_sizes"} <= set(recorded)


def test_an_index_without_a_hessian_records_none(stages, tiny_run, tmp_path):
  config = dataclasses.replace(
    CONFIG, hessian=hessian_core.HessianSpec(kind="none")
  )
  info = _build_index(stages, None, tmp_path / "index", config)
  assert info["hessian"] is None and info["hessian_dir"] is None
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  encoder, _ = retrieve_lib.load_method(loaded, str(tmp_path / "index"))
  assert encoder.preconditioner is None


def test_retrieval_refuses_a_hessian_refitted_after_the_index(
  stages, tiny_run, tmp_path
):
  hessian_dir = _copy_hessian(stages, tmp_path / "hessian")
  index_dir = tmp_path / "index"
  built = _build_index(stages, hessian_dir, index_dir)
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  encoder, _ = retrieve_lib.load_method(loaded, str(index_dir))  # matches
  assert encoder.preconditioner is not None
  refit = dataclasses.replace(
    CONFIG, hessian=dataclasses.replace(CONFIG.hessian, damping=1e-1)
  )
  info = hessian_lib.run_pipeline(
    TestPipeline(),
    options=hessian_lib.HessianOptions(
      store_dir=str(stages["store"]),
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(hessian_dir),  # in place
      encoder_config=refit,
      batch_size=16,
    ),
  )
  old = built["hessian"]["preconditioner_digest"]
  new = info["preconditioner_digest"]
  assert old != new
  with pytest.raises(index_core.HessianMismatchError) as error:
    retrieve_lib.load_method(loaded, str(index_dir))
  message = str(error.value)
  for part in (str(hessian_dir), str(index_dir), old, new, "refitted"):
    assert part in message
  assert isinstance(error.value, encoder_lib.FingerprintMismatchError)


def test_a_hessian_json_without_a_digest_is_named(stages, tiny_run, tmp_path):
  hessian_dir = _copy_hessian(stages, tmp_path / "hessian")
  index_dir = tmp_path / "index"
  _build_index(stages, hessian_dir, index_dir)
  info = json.load(open(hessian_dir / "hessian.json"))
  del info["preconditioner_digest"]
  json.dump(info, open(hessian_dir / "hessian.json", "w"))
  match = "records no preconditioner_digest"
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  with pytest.raises(index_core.HessianMismatchError, match=match):
    retrieve_lib.load_method(loaded, str(index_dir))
  with pytest.raises(index_core.HessianMismatchError, match=match):
    _build_index(stages, hessian_dir, tmp_path / "other")


def test_an_index_without_a_hessian_digest_is_named(stages, tiny_run, tmp_path):
  index = index_core.Index.load(str(stages["root"] / "index"))
  del index.info["hessian"]["preconditioner_digest"]
  index.save(str(tmp_path / "index"))
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  with pytest.raises(
    index_core.HessianMismatchError, match="records no digest.*rebuild"
  ):
    retrieve_lib.load_method(loaded, str(tmp_path / "index"))


def test_a_worker_refuses_a_hessian_refitted_during_the_job(stages, tmp_path):
  shard = index_lib.FinishShard(
    index_lib.IndexOptions(
      store_dir=str(stages["store"]),
      hessian_dir=str(stages["hessian_dir"]),
      output_dir=str(tmp_path / "index"),
      encoder_config=CONFIG,
    ),
    "0" * 16,
  )
  with pytest.raises(index_core.HessianMismatchError, match="0{16}"):
    shard.setup()


def _blocks(full, sizes):
  """The diagonal blocks of `sizes` of a [d, d] matrix."""
  ends = np.cumsum(sizes)
  return [full[e - s : e, e - s : e] for s, e in zip(sizes, ends, strict=True)]


def test_trackstar_one_sided_fits_r_eval_from_uncorrected_queries(
  stages, tiny_run, tmp_path
):
  one_sided = encoder_lib.preset(
    "trackstar_one_sided", projection=CONFIG.projection
  )
  hessian_dir = tmp_path / "hessian"
  info = hessian_lib.run_pipeline(
    TestPipeline(),
    options=hessian_lib.HessianOptions(
      store_dir=str(stages["store"]),  # TrackStar's: no new corpus pass
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(hessian_dir),
      encoder_config=one_sided,
      batch_size=16,
    ),
  )
  assert json.loads(info["query_correction"])["kind"] == "none"
  assert "query_correction" not in stages["hessian"]
  ours = np.load(hessian_dir / "hessian.npz")
  theirs = np.load(stages["hessian_dir"] / "hessian.npz")
  sizes = info["block_sizes"]
  assert sizes == stages["hessian"]["block_sizes"]
  # R_train: the corrected store, as TrackStar's. R_eval: φ_q uncorrected.
  store = store_lib.EncodingStore(str(stages["store"]))
  plain = encoder_lib.with_recorded_layout(
    encoder_lib.preset("trackstar_no_correction", projection=CONFIG.projection),
    store.manifest["encoder_config"],
  )
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  queries = data_lib.read_queries(tiny_run["queries"])
  phi = encoder_lib.encode_queries(
    encoder_lib.from_checkpoint(loaded, plain),
    loaded.tokenizer,
    queries,
    batch_size=16,
    max_len=loaded.max_len,
    finished=False,
  )
  rows = phi.features[phi.finite].astype(np.float64)
  expected = _blocks(rows.T @ rows / len(rows), sizes)
  for i, block in enumerate(expected):
    np.testing.assert_allclose(ours[f"train_{i}"], theirs[f"train_{i}"])
    np.testing.assert_allclose(
      ours[f"eval_{i}"], block, rtol=1e-4, atol=1e-6 * np.abs(block).max()
    )
  assert not np.allclose(ours["eval_0"], theirs["eval_0"], rtol=0.1)
  # TrackStar's Hessian (R_eval of corrected queries) is refused by name.
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'query_correction'"
  ):
    _build_index(stages, stages["hessian_dir"], tmp_path / "bad", one_sided)
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'query_correction'"
  ):
    _build_index(stages, hessian_dir, tmp_path / "bad", CONFIG)
  # Retrieval finishes the queries' uncorrected φ with the one-sided R.
  index_dir = tmp_path / "index"
  _build_index(stages, hessian_dir, index_dir, one_sided)
  encoder, _ = retrieve_lib.load_method(loaded, str(index_dir))
  assert encoder.config.one_sided
  finished = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=16,
    max_len=loaded.max_len,
  )
  preconditioner, _ = hessian_core.load(str(hessian_dir))
  np.testing.assert_allclose(
    finished.features[phi.finite],
    np.asarray(
      encoder_lib.finish(
        phi.features[phi.finite], preconditioner, normalize=True
      )
    ),
    atol=1e-4,
  )


def _hessian_options(stages, tiny_run, output_dir, config=CONFIG):
  return hessian_lib.HessianOptions(
    store_dir=str(stages["store"]),
    queries=tiny_run["queries"],
    checkpoint=tiny_run["checkpoint"],
    output_dir=str(output_dir),
    encoder_config=config,
    batch_size=16,
  )


def _brute_force_fit(stages, tiny_run, sizes):
  """The fit of CONFIG's Hessian from the whole store and every query's φ,
  accumulated in one pass each."""
  store = store_lib.EncodingStore(str(stages["store"]))
  train = hessian_core.Autocorrelation(sizes)
  train.update(store.load().vectors.astype(np.float64))
  config = encoder_lib.with_recorded_layout(
    CONFIG, store.manifest["encoder_config"]
  )
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  phi = encoder_lib.encode_queries(
    encoder_lib.from_checkpoint(loaded, config),
    loaded.tokenizer,
    data_lib.read_queries(tiny_run["queries"]),
    batch_size=16,
    max_len=loaded.max_len,
    finished=False,
  )
  evaluation = hessian_core.Autocorrelation(sizes)
  evaluation.update(phi.features[phi.finite].astype(np.float64))
  return hessian_core.fit(CONFIG.hessian, train, evaluation), train


def test_the_fit_hessian_transform_equals_a_brute_force_fit(
  stages, tiny_run, tmp_path
):
  sizes = stages["hessian"]["block_sizes"]
  expected, train = _brute_force_fit(stages, tiny_run, sizes)
  # A rerun into a finished directory: unfinished until it has run.
  directory = _copy_hessian(stages, tmp_path / "hessian")

  def equals_the_brute_force_fit(infos):
    (info,) = infos
    if not (
      info["block_sizes"] == sizes
      and info["train_examples"] == train.count
      and info["eval_examples"] > 0
      and info["eigen_k"] == expected.eigen_k
      and info["mix"] == pytest.approx(expected.mix, rel=1e-6)
      and info["shrinkage"]
      == pytest.approx(expected.diagnostics["shrinkage"], abs=1e-5)
    ):
      raise BeamAssertException(f"{info} is not the brute-force fit")

  with TestPipeline() as pipeline:
    info = pipeline | hessian_lib.FitHessian(
      _hessian_options(stages, tiny_run, directory)
    )
    assert_that(info, equals_the_brute_force_fit)
    assert not (directory / files.COMPLETED).exists()
  assert (directory / files.COMPLETED).exists()
  loaded, _ = hessian_core.load(str(directory))
  for ours, theirs in zip(
    loaded.blocks, expected.preconditioner.blocks, strict=True
  ):
    theirs = np.asarray(theirs)
    np.testing.assert_allclose(
      np.asarray(ours), theirs, atol=1e-4 * np.abs(theirs).max()
    )


def test_the_build_index_transform_writes_every_finished_encoding(
  stages, tmp_path
):
  store = store_lib.EncodingStore(str(stages["store"]))
  directory = tmp_path / "index"
  digest = stages["hessian"]["preconditioner_digest"]

  def is_a_sharded_index_of_the_store(infos):
    (info,) = infos
    counts = [shard["count"] for shard in info["shards"]]
    if not (
      info["layout"] == index_core.SHARDED
      and info["size"] == len(store)
      and len(counts) == store.num_shards
      and sum(counts) == len(store)
      and info["hessian"]["preconditioner_digest"] == digest
    ):
      raise BeamAssertException(f"{info} is not an index of the store")

  with TestPipeline() as pipeline:
    info = pipeline | index_lib.BuildIndex(
      index_lib.IndexOptions(
        store_dir=str(stages["store"]),
        hessian_dir=str(stages["hessian_dir"]),
        output_dir=str(directory),
        encoder_config=CONFIG,
        kind="exact",
      )
    )
    assert_that(info, is_a_sharded_index_of_the_store)
  assert (directory / files.COMPLETED).exists()
  index = index_core.Index.load(str(directory))
  loaded = store.load()
  preconditioner, _ = hessian_core.load(str(stages["hessian_dir"]))
  order = np.argsort(loaded.ids)
  expected = encoder_lib.finish(
    loaded.vectors[order].astype(np.float32), preconditioner, normalize=True
  )
  assert index.ids == sorted(loaded.ids)
  np.testing.assert_allclose(index.vectors, np.asarray(expected), atol=1e-4)


def test_the_jobs_write_their_markers_last(stages):
  for directory in (stages["hessian_dir"], stages["root"] / "index"):
    names = sorted(p.name for p in directory.iterdir())
    assert files.COMPLETED in names
    assert not [name for name in names if ".tmp-" in name]
    marker = (directory / files.COMPLETED).stat().st_mtime_ns
    assert all(
      (directory / name).stat().st_mtime_ns <= marker for name in names
    )


def test_unfinished_hessian_and_index_directories_are_refused(
  stages, tiny_run, tmp_path
):
  hessian_dir = _copy_hessian(stages, tmp_path / "hessian")
  os.remove(hessian_dir / files.COMPLETED)
  message = re.escape(f"{hessian_dir}: no COMPLETED marker: the hessian job")
  with pytest.raises(files.UnfinishedError, match=message):
    hessian_core.load(str(hessian_dir))
  with pytest.raises(files.UnfinishedError, match=message):
    _build_index(stages, hessian_dir, tmp_path / "other")
  index_dir = tmp_path / "index"
  shutil.copytree(stages["root"] / "index", index_dir)
  os.remove(index_dir / files.COMPLETED)
  message = re.escape(f"{index_dir}: no COMPLETED marker: the index job")
  with pytest.raises(files.UnfinishedError, match=message):
    index_core.Index.load(str(index_dir))
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  with pytest.raises(files.UnfinishedError, match=message):
    retrieve_lib.load_method(loaded, str(index_dir))


def test_a_too_long_query_is_rejected_with_its_id(stages, tiny_run, tmp_path):
  with open(tiny_run["queries"]) as f:
    lines = f.read().splitlines()
  long_query = {
    "id": "q-too-long",
    "prompt": " ".join(["the capital of"] * 200),
    "target": "Paris",
  }
  queries = tmp_path / "queries.jsonl"
  middle = len(lines) // 2
  queries.write_text(
    "\n".join([*lines[:middle], json.dumps(long_query), *lines[middle:]]) + "\n"
  )

  def rejected(directory):
    with open(os.path.join(directory, store_lib.REJECTED)) as f:
      return [json.loads(line) for line in f]

  hessian_dir = tmp_path / "hessian"
  hessian_lib.run_pipeline(
    TestPipeline(),
    options=hessian_lib.HessianOptions(
      store_dir=str(stages["store"]),
      queries=str(queries),
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(hessian_dir),
      encoder_config=CONFIG,
      batch_size=16,
    ),
  )
  (record,) = rejected(hessian_dir)
  assert record["id"] == "q-too-long"
  assert re.match(
    r"too long: query has \d+ tokens > max_len=\d+", record["reason"]
  )
  # R_eval is the other queries' alone, as without the long one.
  fitted = np.load(hessian_dir / "hessian.npz")
  original = np.load(stages["hessian_dir"] / "hessian.npz")
  for i in range(len(stages["hessian"]["block_sizes"])):
    np.testing.assert_allclose(
      fitted[f"eval_{i}"], original[f"eval_{i}"], rtol=1e-5, atol=1e-9
    )

  out = tmp_path / "report"
  retrieve_lib.run_pipeline(
    TestPipeline(),
    options=retrieve_lib.RetrieveOptions(
      queries=str(queries),
      checkpoint=tiny_run["checkpoint"],
      corpus=tiny_run["corpus"],
      indexes=(("trackstar", str(stages["root"] / "index")),),
      output_dir=str(out),
      batch_size=16,
    ),
  )
  assert [r["id"] for r in rejected(out)] == ["q-too-long"]
  reported = {
    r["query_id"]
    for r in report_lib.read_report_jsonl(str(out / "report.jsonl"))
  }
  assert reported == {json.loads(line)["id"] for line in lines}
