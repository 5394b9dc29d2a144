"""Sharded exact indexes: built shard by shard, searched shard by shard."""

import dataclasses
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import encode_lib, hessian_lib, index_lib, retrieve_lib
from tests.pipelines.conftest import STORE_CONFIG
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files, mesh_search
from trak_jax import hessian as hessian_core
from trak_jax import index as index_core
from trak_jax import report as report_lib
from trak_jax import store as store_lib

CONFIG = STORE_CONFIG
BFLOAT16 = dataclasses.replace(CONFIG, dtype="bfloat16")
K = 10


def _encode_and_fit(tiny_run, root, name, config, *, num_shards):
  store_dir, hessian_dir = str(root / name), str(root / f"{name}-hessian")
  encode_lib.run_pipeline(
    TestPipeline(),
    options=encode_lib.EncodeOptions(
      corpus=tiny_run["corpus"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=store_dir,
      encoder_config=config,
      num_shards=num_shards,
      batch_size=16,
    ),
  )
  hessian_lib.run_pipeline(
    TestPipeline(),
    options=hessian_lib.HessianOptions(
      store_dir=store_dir,
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=hessian_dir,
      encoder_config=config,
      batch_size=16,
    ),
  )
  return store_dir, hessian_dir


def _resharded(store_dir: str, output_dir: str, *, num_shards: int) -> str:
  """The store's records dealt over `num_shards` shards, shard 1 empty."""
  store = store_lib.EncodingStore(store_dir)
  records = sorted(store.records(), key=lambda r: r.id)
  full = [i for i in range(num_shards) if i != 1]
  groups = [
    records[full.index(i) :: len(full)] if i in full else []
    for i in range(num_shards)
  ]
  shards = [
    store_lib.write_shard(
      output_dir,
      index=i,
      num_shards=num_shards,
      records=group,
      rejected=[],
      fingerprint=store.fingerprint,
    )
    for i, group in enumerate(groups)
  ]
  store_lib.finalize(
    output_dir,
    shards=shards,
    parse_rejected=[],
    fingerprint=store.fingerprint,
    encoder_config=store.manifest["encoder_config"],
    num_read=len(store),
    source=store.manifest["source"],
  )
  return output_dir


def _index(store_dir, hessian_dir, output_dir, config) -> dict:
  return index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=store_dir,
      hessian_dir=hessian_dir,
      output_dir=str(output_dir),
      encoder_config=config,
      kind="exact",
    ),
  )


@pytest.fixture(scope="module")
def sharded(tiny_run, trackstar_store, tmp_path_factory):
  """Three sharded exact indexes (of a store of 2 shards, of the same
  records in 5 shards one of which is empty, of a bfloat16 store of 3
  shards) and one retrieval job over all three, in batches of 8 queries."""
  root = tmp_path_factory.mktemp("sharded")
  store = str(trackstar_store["store"])
  hessian = str(trackstar_store["hessian_dir"])
  bf16_store, bf16_hessian = _encode_and_fit(
    tiny_run, root, "bf16", BFLOAT16, num_shards=3
  )
  resharded = _resharded(store, str(root / "resharded"), num_shards=5)
  methods = {
    "exact": (store, hessian, CONFIG),
    "resharded": (resharded, hessian, CONFIG),
    "bf16": (bf16_store, bf16_hessian, BFLOAT16),
  }
  infos = {
    name: _index(s, h, root / f"index-{name}", config)
    for name, (s, h, config) in methods.items()
  }
  retrieve_lib.run_pipeline(
    TestPipeline(),
    options=retrieve_lib.RetrieveOptions(
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      corpus=tiny_run["corpus"],
      indexes=tuple((name, str(root / f"index-{name}")) for name in methods),
      output_dir=str(root / "report"),
      k=K,
      batch_size=8,
    ),
  )
  return {
    "root": root,
    "methods": methods,
    "infos": infos,
    "records": report_lib.read_report_jsonl(
      str(root / "report" / "report.jsonl")
    ),
    "loaded": checkpoint_lib.load_checkpoint(tiny_run["checkpoint"]),
    "queries": data_lib.read_queries(tiny_run["queries"]),
    "queries_path": tiny_run["queries"],
    "checkpoint_path": tiny_run["checkpoint"],
    "corpus_path": tiny_run["corpus"],
  }


def _index_dir(sharded, name) -> str:
  return str(sharded["root"] / f"index-{name}")


def _query_features(sharded, name) -> dict[str, np.ndarray]:
  encoder, _ = retrieve_lib.load_encoder(
    sharded["loaded"], _index_dir(sharded, name)
  )
  encoded = encoder_lib.encode_queries(
    encoder,
    sharded["loaded"].tokenizer,
    sharded["queries"],
    batch_size=16,
    max_len=sharded["loaded"].model_config.max_len,
  )
  features = np.asarray(encoded.features, np.float64)
  return {q.id: f for q, f in zip(sharded["queries"], features, strict=True)}


def _finished_store(store_dir, hessian_dir) -> tuple[list[str], np.ndarray]:
  """Every stored encoding, finished: ids and [n, d] float32."""
  batch = store_lib.EncodingStore(store_dir).load()
  preconditioner, _ = hessian_core.load(hessian_dir)
  finished = encoder_lib.finish(
    np.asarray(batch.vectors, np.float32), preconditioner, normalize=True
  )
  return batch.ids, np.asarray(finished, np.float32)


def _brute_force(ids, vectors, query: np.ndarray) -> dict[str, float]:
  """NumPy scores of every encoding with the query: {id: score}."""
  scores = vectors.astype(np.float64) @ query
  return dict(zip(ids, scores.tolist(), strict=True))


def _top_k(scores: dict[str, float]) -> list[tuple[str, float]]:
  """The exact top-k: scores descending, equal scores by id."""
  return sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:K]


def _found(record, method) -> list[tuple[str, float]]:
  proponents = record["results"][method]["proponents"]
  return [(p["id"], p["score"]) for p in proponents]


def _assert_same_ranking(found, expected, scores, *, atol):
  """`found` is the exact top-k `expected`: the same scores, and the same
  ids except where float32 rounding reorders near-ties (the corpus repeats
  some passages: their encodings differ by ~1e-8), where the id found must
  score the same as the one expected (by `scores`, all ids' true scores)."""
  assert len(found) == len(expected) == K
  assert len({i for i, _ in found}) == K
  np.testing.assert_allclose(
    [s for _, s in found], [s for _, s in expected], atol=atol
  )
  for (found_id, _), (expected_id, expected_score) in zip(
    found, expected, strict=True
  ):
    if found_id != expected_id:
      assert scores[found_id] == pytest.approx(expected_score, abs=atol)


@pytest.mark.parametrize("method", ["exact", "resharded"])
def test_sharded_retrieval_equals_brute_force(sharded, method):
  store_dir, hessian_dir, _ = sharded["methods"][method]
  ids, vectors = _finished_store(store_dir, hessian_dir)
  features = _query_features(sharded, method)
  assert len(sharded["records"]) == len(sharded["queries"]) > 8  # batches
  same = 0
  for record in sharded["records"]:
    scores = _brute_force(ids, vectors, features[record["query_id"]])
    found, expected = _found(record, method), _top_k(scores)
    _assert_same_ranking(found, expected, scores, atol=1e-5)
    same += found == expected or [i for i, _ in found] == [
      i for i, _ in expected
    ]
  assert same >= len(sharded["records"]) // 2  # Near-ties are rare.


def test_sharded_retrieval_equals_the_whole_index(sharded):
  index_dir = _index_dir(sharded, "exact")
  whole = index_core.Index.load(index_dir)
  store_dir, hessian_dir, _ = sharded["methods"]["exact"]
  ids, vectors = _finished_store(store_dir, hessian_dir)
  order = np.argsort(ids)
  assert whole.ids == sorted(ids)
  np.testing.assert_allclose(whole.vectors, vectors[order], atol=1e-5)
  features = _query_features(sharded, "exact")
  records = sharded["records"]
  found = whole.search(
    np.stack([features[r["query_id"]] for r in records]), k=K
  )
  for row, record in enumerate(records):
    scores = _brute_force(ids, vectors, features[record["query_id"]])
    expected = list(
      zip(found.ids[row], found.scores[row].tolist(), strict=True)
    )
    for method in ("exact", "resharded"):  # The same encodings, resharded.
      _assert_same_ranking(_found(record, method), expected, scores, atol=1e-5)


def test_mesh_search_in_the_job_equals_shard_work_items(sharded):
  root = sharded["root"]
  options = retrieve_lib.RetrieveOptions(
    queries=str(sharded["queries_path"]),
    checkpoint=str(sharded["checkpoint_path"]),
    corpus=str(sharded["corpus_path"]),
    indexes=tuple(
      (name, _index_dir(sharded, name)) for name in sharded["methods"]
    ),
    output_dir=str(root / "mesh-report"),
    k=K,
    batch_size=8,
    search="mesh",
  )
  assert retrieve_lib._shard_work(options) is None  # No shard work items.
  retrieve_lib.run_pipeline(TestPipeline(), options=options)
  records = report_lib.read_report_jsonl(str(root / "mesh-report/report.jsonl"))
  on_mesh = {r["query_id"]: r for r in records}
  assert sorted(on_mesh) == sorted(r["query_id"] for r in sharded["records"])
  for name, (store_dir, hessian_dir, config) in sharded["methods"].items():
    ids, vectors = _finished_store(store_dir, hessian_dir)
    vectors = vectors.astype(np.dtype(config.dtype)).astype(np.float32)
    features = _query_features(sharded, name)
    for record in sharded["records"]:
      scores = _brute_force(ids, vectors, features[record["query_id"]])
      found = _found(on_mesh[record["query_id"]], name)
      _assert_same_ranking(found, _found(record, name), scores, atol=1e-5)
  with pytest.raises(ValueError, match="search='scann'"):
    dataclasses.replace(options, search="scann")


def test_the_index_job_writes_one_shard_per_store_shard(sharded):
  for name, (store_dir, _, _) in sharded["methods"].items():
    store = store_lib.EncodingStore(store_dir)
    info = sharded["infos"][name]
    assert info == index_core.load_info(_index_dir(sharded, name))
    assert info["layout"] == "sharded" and info["kind"] == "exact"
    assert [s["file"] for s in info["shards"]] == [
      index_core.shard_file_name(i, store.num_shards)
      for i in range(store.num_shards)
    ]
    assert [s["count"] for s in info["shards"]] == [
      s["count"] for s in store.manifest["shards"]
    ]
    assert info["size"] == len(store)
    assert info["store_fingerprint"] == store.fingerprint.to_dict()
    assert info["encoder_config"]["dtype"] == store.manifest["dtype"]
    assert info["hessian"]["preconditioner_digest"]
    names = os.listdir(_index_dir(sharded, name))
    assert sorted(names) == sorted(
      [
        index_core.INFO,
        files.COMPLETED,
        *(s["file"] for s in info["shards"]),
      ]
    )  # No temporary files left, no whole-index copy.
  assert sharded["infos"]["resharded"]["shards"][1]["count"] == 0


def test_a_bfloat16_store_is_indexed_and_retrieved(sharded):
  store_dir, hessian_dir, _ = sharded["methods"]["bf16"]
  assert store_lib.EncodingStore(store_dir).manifest["dtype"] == "bfloat16"
  index_dir = _index_dir(sharded, "bf16")
  info = index_core.load_info(index_dir)
  assert info["dtype"] == "bfloat16"
  shard = index_core.read_shard(index_dir, info, 0)
  assert shard.vectors.dtype == np.dtype("bfloat16") and len(shard.ids) > 0
  ids, vectors = _finished_store(store_dir, hessian_dir)
  rounded = vectors.astype(np.dtype("bfloat16")).astype(np.float32)
  order = np.argsort(ids)
  whole = index_core.Index.load(index_dir)
  np.testing.assert_array_equal(whole.vectors, rounded[order])  # Read back.
  features = _query_features(sharded, "bf16")
  for record in sharded["records"]:
    query = features[record["query_id"]]
    scores = _brute_force(ids, rounded, query)
    found = _found(record, "bf16")
    _assert_same_ranking(found, _top_k(scores), scores, atol=1e-5)
    float32_scores = _brute_force(ids, vectors, query)
    np.testing.assert_allclose(
      [s for _, s in found], [float32_scores[i] for i, _ in found], atol=2e-2
    )


def test_a_corrupted_shard_is_named(sharded, tmp_path):
  index_dir = str(tmp_path / "index")
  shutil.copytree(_index_dir(sharded, "resharded"), index_dir)
  name = index_core.shard_file_name(2, 5)
  path = os.path.join(index_dir, name)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(index_core.IndexShardError, match=f"{name}.*corrupted"):
    index_core.Index.load(index_dir)
  score = retrieve_lib.ScoreShard(K)
  score.setup()
  query = np.ones((1, CONFIG.projection.dim), np.float32)
  batches = [("m", ["q"], query), ("other", ["q"], query)]
  (key, found), *rest = score.process(("m", index_dir, 0), batches)  # Intact.
  assert key == ("q", "m") and len(found) == K and not rest
  assert list(score.process(("m", index_dir, 1), batches)) == [(key, [])]
  with pytest.raises(index_core.IndexShardError, match=f"{name}.*corrupted"):
    list(score.process(("m", index_dir, 2), batches))
  os.remove(path)
  with pytest.raises(index_core.IndexShardError, match=f"{name}.*missing"):
    index_core.Index.load(index_dir)


def _partials(seed: int) -> tuple[list, list]:
  """Partial top-k of one query from 5 shards (one empty) with tied scores,
  and every (id, score) pair."""
  rng = random.Random(seed)
  ids = [f"e{i:03d}" for i in range(60)]
  rng.shuffle(ids)
  scores = [round(rng.uniform(-1, 1), 1) for _ in ids]  # Many ties.
  shards = [list(zip(ids[i::5], scores[i::5], strict=True)) for i in range(5)]
  shards[3] = []  # An empty shard.
  partials = [
    sorted(shard, key=lambda p: (-p[1], p[0]))[:K] for shard in shards
  ]
  return partials, [pair for shard in shards for pair in shard]


def test_any_grouping_of_partial_top_k_merges_to_the_exact_top_k():
  for seed in range(5):
    partials, everything = _partials(seed)
    expected = sorted(everything, key=lambda p: (-p[1], p[0]))[:K]
    combine = retrieve_lib.MergeTopK(K)
    for order in itertools.permutations(partials):
      accumulator = combine.create_accumulator()
      for partial in order:
        accumulator = combine.add_input(accumulator, partial)
      assert combine.extract_output(accumulator) == expected
    rng = random.Random(seed)
    for _ in range(20):  # Random splits into accumulators, then merged.
      shuffled = rng.sample(partials, len(partials))
      cut = rng.randrange(len(partials) + 1)
      accumulators = []
      for group in (shuffled[:cut], shuffled[cut:]):
        accumulator = combine.create_accumulator()
        for partial in group:
          accumulator = combine.add_input(accumulator, partial)
        accumulators.append(accumulator)
      merged = combine.merge_accumulators(rng.sample(accumulators, 2))
      assert combine.extract_output(merged) == expected


def test_merge_top_k_in_a_pipeline():
  partials, everything = _partials(0)
  expected = sorted(everything, key=lambda p: (-p[1], p[0]))[:K]
  with TestPipeline() as pipeline:
    merged = (
      pipeline
      | beam.Create([(("q", "m"), p) for p in partials])
      | beam.CombinePerKey(retrieve_lib.MergeTopK(K))
    )
    assert_that(merged, equal_to([(("q", "m"), expected)]))


def test_a_bfloat16_store_reads_back_as_the_float32_store_rounded(sharded):
  float32 = store_lib.EncodingStore(sharded["methods"]["exact"][0]).load()
  bf16 = store_lib.EncodingStore(sharded["methods"]["bf16"][0])
  assert bf16.dtype == np.dtype("bfloat16") and bf16.num_shards == 3
  loaded = bf16.load()
  assert loaded.vectors.dtype == np.dtype("bfloat16")
  assert sorted(loaded.ids) == sorted(float32.ids)
  by_id = dict(zip(float32.ids, float32.vectors, strict=True))
  for example_id, vector in zip(loaded.ids, loaded.vectors, strict=True):
    expected = by_id[example_id]
    # bfloat16 keeps 8 significant bits: each number within 2^-8 of it.
    np.testing.assert_allclose(
      vector.astype(np.float32),
      expected,
      rtol=2**-8,
      atol=1e-6 * np.abs(expected).max(),
    )


def test_bfloat16_retrieval_agrees_with_float32(sharded):
  overlaps = []
  for record in sharded["records"]:
    float32, bf16 = _found(record, "exact"), _found(record, "bf16")
    overlaps.append(len({i for i, _ in float32} & {i for i, _ in bf16}) / K)
    # Both Hessians fitted on their own store: scores agree to bf16 rounding.
    np.testing.assert_allclose(
      [s for _, s in bf16], [s for _, s in float32], atol=2e-2
    )
  assert np.mean(overlaps) >= 0.8


def test_an_int8_index_keeps_recall_against_float32(sharded, tmp_path):
  store_dir, hessian_dir, _ = sharded["methods"]["exact"]
  info = index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=store_dir,
      hessian_dir=hessian_dir,
      output_dir=str(tmp_path / "int8"),
      encoder_config=CONFIG,
      kind="exact",
      dtype="int8",
    ),
  )
  assert info["dtype"] == "int8" and info["recall_at_10_vs_float32"] >= 0.9
  assert all(s["recall_at_10_vs_float32"] >= 0.9 for s in info["shards"])
  ids, vectors = _finished_store(store_dir, hessian_dir)
  order = np.argsort(ids)
  whole = index_core.Index.load(str(tmp_path / "int8"))
  shard = index_core.read_shard(str(tmp_path / "int8"), info, 0)
  assert isinstance(shard.vectors, index_core.Int8Rows)
  scales = np.concatenate(
    [
      index_core.read_shard(str(tmp_path / "int8"), info, i).vectors.scales
      for i in range(2)
    ]
  )
  error = np.abs(whole.vectors - vectors[order])
  assert error.max() <= scales.max() / 2 + 1e-6
  features = _query_features(sharded, "exact")
  queries = np.stack([features[r["query_id"]] for r in sharded["records"]])
  found = whole.search(queries, k=K)
  exact = [[i for i, _ in _found(r, "exact")] for r in sharded["records"]]
  recall = np.mean(
    [len(set(f) & set(e)) / K for f, e in zip(found.ids, exact, strict=True)]
  )
  assert recall >= 0.9
  with pytest.raises(ValueError, match="needs a sharded index"):
    dataclasses.replace(
      index_lib.IndexOptions(
        store_dir="s", hessian_dir=None, output_dir="o", encoder_config=CONFIG
      ),
      dtype="int8",
    )


def test_scann_per_shard_keeps_recall_and_records_it(sharded, tmp_path):
  store_dir, hessian_dir, _ = sharded["methods"]["resharded"]  # One empty.
  index_dir = str(tmp_path / "scann")
  info = index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=store_dir,
      hessian_dir=hessian_dir,
      output_dir=index_dir,
      encoder_config=CONFIG,
      kind=index_core.SCANN_SHARDED,
      scann=index_core.ScannSpec(reorder_k=50),
      dtype="bfloat16",
    ),
  )
  assert info["kind"] == "scann_sharded" and info["shards"][1]["scann"] is None
  for entry in info["shards"][:1] + info["shards"][2:]:
    assert entry["scann"]["recall_at_10"]["recall"] >= 0.8
    assert os.path.isdir(os.path.join(index_dir, entry["scann"]["dir"]))
  assert 0.8 <= info["scann_recall_at_10"] <= 1
  features = _query_features(sharded, "resharded")
  records = sharded["records"]
  batches = [
    (
      "m",
      [r["query_id"] for r in records],
      np.stack([features[r["query_id"]] for r in records]).astype(np.float32),
    )
  ]
  score = retrieve_lib.ScoreShard(K)
  score.setup()
  partials = {}
  for number in range(len(info["shards"])):
    for (query_id, _), partial in score.process(
      ("m", index_dir, number), batches
    ):
      partials.setdefault(query_id, []).append(partial)
  recalls = []
  for record in records:
    merged = index_core.merge_top_k(partials[record["query_id"]], k=K)
    assert len(merged) == K
    exact = {i for i, _ in _found(record, "resharded")}
    recalls.append(len({i for i, _ in merged} & exact) / K)
  assert np.mean(recalls) >= 0.8


def test_approx_mesh_search_meets_its_recall_target(sharded, monkeypatch):
  target = 0.9
  calls = []
  search = mesh_search.search

  def spy(corpus, queries, **options):
    calls.append(options)
    return search(corpus, queries, **options)

  monkeypatch.setattr(mesh_search, "search", spy)
  root = sharded["root"]
  options = retrieve_lib.RetrieveOptions(
    queries=str(sharded["queries_path"]),
    checkpoint=str(sharded["checkpoint_path"]),
    corpus=str(sharded["corpus_path"]),
    indexes=(("exact", _index_dir(sharded, "exact")),),
    output_dir=str(root / "approx-report"),
    k=K,
    batch_size=8,
    search="mesh",
    approx_recall_target=target,
  )
  metrics = retrieve_lib.run_pipeline(TestPipeline(), options=options)
  assert calls and all(
    c["approx"] is True and c["recall_target"] == target for c in calls
  )
  assert metrics["search"] == {
    "mode": "mesh",
    "approx": True,
    "recall_target": target,
  }
  records = report_lib.read_report_jsonl(
    str(root / "approx-report/report.jsonl")
  )
  approx = {r["query_id"]: r for r in records}
  assert sorted(approx) == sorted(r["query_id"] for r in sharded["records"])
  for record in sharded["records"]:  # Exact shard-by-shard search's.
    exact = {i for i, _ in _found(record, "exact")}
    found = [i for i, _ in _found(approx[record["query_id"]], "exact")]
    assert len(found) == len(set(found)) == K
    assert len(set(found) & exact) / K >= target


def test_the_job_records_exact_search_and_refuses_bad_recall_targets(
  sharded,
):
  report = sharded["root"] / "report" / "metrics.json"
  assert json.loads(report.read_text())["search"] == {
    "mode": "beam",
    "approx": False,
    "recall_target": None,
  }
  options = retrieve_lib.RetrieveOptions(
    queries="q", checkpoint="c", corpus="x", indexes=(), output_dir="o"
  )
  with pytest.raises(ValueError, match="approx_recall_target=0.9 needs search"):
    dataclasses.replace(options, approx_recall_target=0.9)
  for bad in (0.0, 1.5, -0.1):
    with pytest.raises(ValueError, match=f"approx_recall_target={bad}"):
      dataclasses.replace(options, search="mesh", approx_recall_target=bad)
  assert dataclasses.replace(  # The top of the range is allowed.
    options, search="mesh", approx_recall_target=1.0
  ).search_settings() == {"mode": "mesh", "approx": True, "recall_target": 1.0}


def test_scann_per_shard_through_the_retrieve_job(sharded, tmp_path):
  store_dir, hessian_dir, _ = sharded["methods"]["resharded"]  # One empty.
  index_dir = str(tmp_path / "scann")
  info = index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=store_dir,
      hessian_dir=hessian_dir,
      output_dir=index_dir,
      encoder_config=CONFIG,
      kind=index_core.SCANN_SHARDED,
      scann=index_core.ScannSpec(reorder_k=50),
    ),
  )
  assert info["kind"] == "scann_sharded" and info["dtype"] == "float32"
  assert sum(entry["scann"] is not None for entry in info["shards"]) >= 2
  options = retrieve_lib.RetrieveOptions(
    queries=str(sharded["queries_path"]),
    checkpoint=str(sharded["checkpoint_path"]),
    corpus=str(sharded["corpus_path"]),
    indexes=(("scann", index_dir),),
    output_dir=str(tmp_path / "report"),
    k=K,
    batch_size=8,
  )
  work = retrieve_lib._shard_work(options)
  assert work == [("scann", index_dir, i) for i in range(len(info["shards"]))]
  metrics = retrieve_lib.run_pipeline(TestPipeline(), options=options)
  assert metrics["queries"] == len(sharded["queries"])
  records = report_lib.read_report_jsonl(str(tmp_path / "report/report.jsonl"))
  by_query = {r["query_id"]: r for r in records}
  assert sorted(by_query) == sorted(r["query_id"] for r in sharded["records"])
  ids, vectors = _finished_store(store_dir, hessian_dir)
  features = _query_features(sharded, "resharded")
  recalls = []
  for record in sharded["records"]:  # Exact shard-by-shard search's.
    found = _found(by_query[record["query_id"]], "scann")
    assert len(found) == len({i for i, _ in found}) == K
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    # ScaNN re-scores its candidates exactly: the true dot products.
    truth = _brute_force(ids, vectors, features[record["query_id"]])
    np.testing.assert_allclose(scores, [truth[i] for i, _ in found], atol=1e-5)
    exact = {i for i, _ in _found(record, "resharded")}
    recalls.append(len({i for i, _ in found} & exact) / K)
  assert np.mean(recalls) >= 0.8 and min(recalls) >= 0.5
  report = by_query[sharded["records"][0]["query_id"]]
  assert all(p["text"] for p in report["results"]["scann"]["proponents"])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_jax_processes_retrieve_on_one_global_mesh(sharded, tmp_path):
  methods = ("exact", "resharded")
  output_dir = tmp_path / "report"
  args = [
    sys.executable,
    "-m",
    "pipelines.retrieve_main",
    f"--queries={sharded['queries_path']}",
    f"--checkpoint={sharded['checkpoint_path']}",
    f"--corpus={sharded['corpus_path']}",
    *[f"--index={name}={_index_dir(sharded, name)}" for name in methods],
    f"--output_dir={output_dir}",
    f"--gin_bindings=retrieve_lib.RetrieveOptions.k = {K}",
    "--gin_bindings=retrieve_lib.RetrieveOptions.search = 'mesh'",
    "--distributed",
    f"--coordinator_address=localhost:{_free_port()}",
    "--num_processes=2",
  ]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  procs = [
    subprocess.Popen(
      [*args, f"--process_id={i}"],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  for proc in procs:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
  metrics = json.loads((output_dir / "metrics.json").read_text())
  assert metrics["search"] == {
    "mode": "mesh",
    "approx": False,
    "recall_target": None,
    "processes": 2,
  }
  config = (output_dir / "config.gin").read_text()
  assert "retrieve_lib.RetrieveOptions.search = 'mesh'" in config
  records = report_lib.read_report_jsonl(str(output_dir / "report.jsonl"))
  by_query = {r["query_id"]: r for r in records}
  assert sorted(by_query) == sorted(r["query_id"] for r in sharded["records"])
  for name in methods:
    store_dir, hessian_dir, _ = sharded["methods"][name]
    ids, vectors = _finished_store(store_dir, hessian_dir)
    features = _query_features(sharded, name)
    for record in sharded["records"]:  # The single-process Beam job's.
      scores = _brute_force(ids, vectors, features[record["query_id"]])
      found = _found(by_query[record["query_id"]], name)
      _assert_same_ranking(found, _found(record, name), scores, atol=1e-5)
      texts = [
        p["text"]
        for p in by_query[record["query_id"]]["results"][name]["proponents"]
      ]
      assert all(texts)
