"""Chunked top-k and the ScaNN index against brute force."""

import numpy as np
import pytest

from trak_jax import index as index_core
from trak_jax import scoring


def test_chunked_top_k_equals_brute_force():
  rng = np.random.default_rng(0)
  keys = rng.normal(size=(1000, 16)).astype(np.float32)
  queries = rng.normal(size=(7, 16)).astype(np.float32)
  result = scoring.top_k(queries, keys, k=5, chunk_size=64)
  scores = queries.astype(np.float64) @ keys.T.astype(np.float64)
  # Near-tied keys may come in either order (float32 sums in another
  # order), so compare scores: the k best values, and each returned key's
  # own score.
  best = -np.sort(-scores, axis=1)[:, :5]
  np.testing.assert_allclose(result.scores, best, rtol=0, atol=1e-4)
  np.testing.assert_allclose(
    np.take_along_axis(scores, result.indices, 1),
    result.scores,
    rtol=0,
    atol=1e-4,
  )
  assert all(len(set(row)) == 5 for row in result.indices.tolist())


def test_top_k_handles_small_key_sets_and_bad_shapes():
  keys = np.eye(3, dtype=np.float32)
  result = scoring.top_k(np.ones((1, 3), np.float32) * [[3, 2, 1]], keys, k=10)
  np.testing.assert_array_equal(result.indices, [[0, 1, 2]])
  with pytest.raises(ValueError, match="d=4"):
    scoring.top_k(np.ones((1, 4)), keys, k=1)


@pytest.mark.parametrize("num_keys", [700, 1024, 1030])
def test_blocks_and_chunks_equal_one_pass_with_ties_by_index(num_keys):
  # Few distinct rows: many exact ties, across chunks and blocks; chunks of
  # 64 rows of d = 8 (2 KiB in float32), blocks of 4 chunks (8 KiB), and a
  # ragged last chunk where num_keys is not a multiple of 64.
  rng = np.random.default_rng(2)
  distinct = rng.normal(size=(5, 8)).astype(np.float32)
  keys = distinct[rng.integers(0, 5, num_keys)]
  queries = rng.normal(size=(3, 8)).astype(np.float32)
  result = scoring.top_k(queries, keys, k=12, chunk_size=64, block_bytes=8192)
  scores = queries @ keys.T
  # Best first, equal scores by lower index: a stable sort of -scores.
  order = np.argsort(-scores, axis=1, kind="stable")[:, :12]
  np.testing.assert_array_equal(result.indices, order)
  np.testing.assert_allclose(
    result.scores, np.take_along_axis(scores, order, 1), atol=1e-5
  )


def test_bfloat16_and_int8_keys_are_scored_as_their_float32_values():
  rng = np.random.default_rng(3)
  keys = rng.normal(size=(300, 16)).astype(np.float32)
  queries = rng.normal(size=(4, 16)).astype(np.float32)
  for stored in (
    keys.astype(np.dtype("bfloat16")),
    index_core.quantize_int8(keys),
  ):
    widened = np.asarray(stored, np.float32)
    expected = scoring.top_k(queries, widened, k=7, chunk_size=32)
    found = scoring.top_k(
      queries, stored, k=7, chunk_size=32, block_bytes=32 * 16 * 4
    )
    np.testing.assert_array_equal(found.indices, expected.indices)
    np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_a_shard_reads_back_aligned_as_written(tmp_path, dtype):
  rng = np.random.default_rng(4)
  vectors = rng.normal(size=(50, 24)).astype(np.float32)
  ids = [f"e{i:02d}" for i in range(50)]
  entry = index_core.write_shard(
    str(tmp_path), index=0, num_shards=1, ids=ids, vectors=vectors, dtype=dtype
  )
  info = {"dtype": dtype, "dim": 24, "shards": [entry]}
  shard = index_core.read_shard(str(tmp_path), info, 0)
  stored = shard.vectors.codes if dtype == "int8" else shard.vectors
  assert stored.ctypes.data % scoring.ALIGNMENT == 0
  expected = index_core.in_dtype(vectors, dtype)
  np.testing.assert_array_equal(
    np.asarray(shard.vectors, np.float32), np.asarray(expected, np.float32)
  )


def test_aligned_arrays_sit_at_the_alignment_and_keep_their_values():
  array = np.arange(37, dtype=np.float32)[1:].reshape(4, 9)
  copy = scoring.aligned(array)
  assert copy.ctypes.data % scoring.ALIGNMENT == 0
  np.testing.assert_array_equal(copy, array)
  assert scoring.aligned(copy) is copy  # Already aligned: no copy.


@pytest.mark.parametrize(
  "spec",
  [
    index_core.ScannSpec(),  # Small: hashing and re-ordering, no tree.
    index_core.ScannSpec(num_leaves=30, num_leaves_to_search=10),
    index_core.ScannSpec(scorer="brute_force_int8", reorder_k=50),
  ],
)
def test_scann_top10_agrees_with_exact(tmp_path, spec):
  rng = np.random.default_rng(1)
  centers = rng.normal(size=(20, 32))
  vectors = centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(
    size=(3000, 32)
  )
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  ids = [f"e{i}" for i in range(3000)]
  built = index_core.Index.build(
    ids=ids,
    vectors=vectors,
    kind="scann",
    spec=spec,
    info={},
    recall_rows=np.arange(200),
  )
  assert built.info["recall_at_10"]["recall"] >= 0.95
  built.save(str(tmp_path / "index"))
  loaded = index_core.Index.load(str(tmp_path / "index"))
  queries = vectors[100:150] + 0.05 * rng.normal(size=(50, 32))
  found = loaded.search(queries, k=10)
  exact = index_core.Index(ids=ids, vectors=vectors, kind="exact", info={})
  truth = exact.search(queries, k=10)
  overlap = np.mean(
    [
      len(set(a) & set(b)) / 10
      for a, b in zip(found.ids, truth.ids, strict=True)
    ]
  )
  assert overlap >= 0.95
  assert all(np.all(np.diff(row) <= 1e-6) for row in found.scores)  # best first


def test_recall_leaves_out_the_querys_own_row():
  rows = np.array([[3, 1, 2], [0, 4, 5]])
  np.testing.assert_array_equal(
    index_core._without_own_rows(rows, np.array([1, 9]), 2), [[3, 2], [0, 4]]
  )
  # Isotropic encodings queried with themselves: with its own row counted,
  # ScaNN's recall would include a free 1 in 10 per query.
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(2000, 64)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  built = index_core.Index.build(
    ids=[str(i) for i in range(2000)],
    vectors=vectors,
    kind="scann",
    spec=index_core.ScannSpec(dims_per_block=8, reorder_k=20),
    info={},
    recall_rows=np.arange(100),
  )
  honest = built.info["recall_at_10"]["recall"]
  counted = built.measure_recall(vectors[:100])["recall"]
  assert counted >= honest + 0.05


def _unit_rows(seed: int, rows: int, dim: int) -> np.ndarray:
  vectors = np.random.default_rng(seed).standard_normal((rows, dim))
  return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
    np.float32
  )


def test_int8_round_trip_is_within_half_a_step_per_number():
  vectors = _unit_rows(0, 500, 96) * np.linspace(0.1, 3, 500)[:, None]
  vectors[7] = 0.0  # A zero row: scale 0, codes 0.
  rows = index_core.quantize_int8(vectors)
  assert rows.codes.dtype == np.int8 and rows.scales.dtype == np.float32
  assert rows.shape == vectors.shape and len(rows) == 500
  assert np.abs(rows.codes).max() == index_core.INT8_MAX
  np.testing.assert_allclose(
    rows.scales, np.abs(vectors).max(axis=1) / 127, rtol=1e-6
  )
  error = np.abs(np.asarray(rows) - vectors)
  assert (error <= rows.scales[:, None] / 2 + 1e-7).all()
  assert not np.asarray(rows)[7].any() and rows.scales[7] == 0
  np.testing.assert_array_equal(rows[10:20], np.asarray(rows)[10:20])
  # A score's error is at most scale / 2 · ||query||_1.
  query = _unit_rows(1, 1, 96)[0]
  bound = rows.scales / 2 * np.abs(query).sum()
  assert (np.abs(np.asarray(rows) @ query - vectors @ query) <= bound).all()


def test_int8_exact_search_keeps_recall_against_float32():
  # Families of near rows, as finished encodings come (bench/compact_index).
  centres = _unit_rows(2, 40, 256)
  noise = np.random.default_rng(3).standard_normal((4000, 256)) * 2.4 / 16
  vectors = centres[np.arange(4000) % 40] + noise.astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  rows = index_core.in_dtype(vectors, "int8")
  assert index_core.recall_of_dtype(vectors, rows, sample=100) >= 0.97
  queries = _unit_rows(4, 50, 256)
  exact = scoring.top_k(queries, vectors, k=10)
  found = scoring.top_k(queries, rows, k=10)
  assert index_core.recall_against_exact(found.indices, exact.indices) >= 0.97
  np.testing.assert_allclose(found.scores, exact.scores, atol=5e-3)
  assert index_core.recall_of_dtype(vectors[:10], rows[:10]) is None


def test_an_int8_shard_is_written_and_read_back(tmp_path):
  vectors = _unit_rows(5, 300, 32)
  ids = [f"e{i:03d}" for i in np.random.default_rng(6).permutation(300)]
  entry = index_core.write_shard(
    str(tmp_path), index=0, num_shards=1, ids=ids, vectors=vectors, dtype="int8"
  )
  info = {"dtype": "int8", "dim": 32, "shards": [entry]}
  shard = index_core.read_shard(str(tmp_path), info, 0)
  assert isinstance(shard.vectors, index_core.Int8Rows)
  order = np.argsort(ids)
  assert shard.ids == sorted(ids)
  expected = index_core.quantize_int8(vectors[order])
  np.testing.assert_array_equal(shard.vectors.codes, expected.codes)
  np.testing.assert_array_equal(shard.vectors.scales, expected.scales)
  (found,) = index_core.search_shard(shard, vectors[order][:1], k=3)
  assert found[0][0] == shard.ids[0]
  assert found[0][1] == pytest.approx(1.0, abs=1e-2)
  with pytest.raises(ValueError, match="index dtype 'int4'"):
    index_core.in_dtype(vectors, "int4")
  with pytest.raises(ValueError, match="scorer 'lsh'"):
    index_core.ScannSpec(scorer="lsh")
