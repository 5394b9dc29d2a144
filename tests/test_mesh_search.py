"""Search on the mesh against brute force and the sharded exact index."""

import jax
import numpy as np
import pytest

from trak_jax import index as index_core
from trak_jax import mesh_search, partitioning

SIZE, DIM, QUERIES, K = 997, 64, 5, 10  # 997 rows: 8 devices need padding.


def _unit_rows(seed: int, rows: int, dim: int = DIM) -> np.ndarray:
  rng = np.random.default_rng(seed)
  vectors = rng.standard_normal((rows, dim)).astype(np.float32)
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _brute_force(vectors, queries, k=K) -> tuple[np.ndarray, np.ndarray]:
  """Rows and float64 scores of the k best, by NumPy's argsort."""
  scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
  rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return rows, np.take_along_axis(scores, rows, axis=1)


def _mesh(data=4, model=2):
  return partitioning.make_mesh(data=data, model=model)


def _write_index(directory, ids, vectors, *, dtype="float32", shards=4):
  """A sharded exact index of shuffled ids over uneven shards, one empty."""
  rng = np.random.default_rng(7)
  order = rng.permutation(len(ids))
  cuts = np.sort(rng.choice(np.arange(1, len(ids)), shards - 2, replace=False))
  groups = np.split(order, [cuts[0], cuts[0], *cuts[1:]])  # Shard 1 empty.
  entries = [
    index_core.write_shard(
      str(directory),
      index=number,
      num_shards=len(groups),
      ids=[ids[i] for i in group],
      vectors=vectors[group],
      dtype=dtype,
    )
    for number, group in enumerate(groups)
  ]
  assert entries[1]["count"] == 0
  info = {
    "kind": "exact",
    "layout": index_core.SHARDED,
    "dtype": dtype,
    "dim": vectors.shape[1],
    "size": len(ids),
    "shards": entries,
  }
  index_core.write_info(str(directory), info)
  return info


def test_the_corpus_lies_on_every_device_in_blocks_with_padding():
  corpus = mesh_search.place(_unit_rows(0, SIZE), mesh=_mesh(), chunk_rows=32)
  layout = corpus.layout
  assert layout == mesh_search.Layout(SIZE, 8, 128, 32)  # 125 -> 4 chunks.
  shards = sorted(corpus.vectors.addressable_shards, key=lambda s: s.index)
  assert len({s.device for s in shards}) == len(jax.devices()) == 8
  assert all(s.data.shape == (128, DIM) for s in shards)
  keys = np.asarray(corpus.keys)
  np.testing.assert_array_equal(keys[:SIZE], np.arange(SIZE))
  assert (keys[SIZE:] == mesh_search.PAD_KEY).all() and len(keys) == 1024


@pytest.mark.parametrize(
  "data,model,chunk_rows",
  [(4, 2, 32), (8, 1, 16_384), (1, 8, 50)],
)
def test_mesh_search_equals_brute_force(data, model, chunk_rows):
  vectors, queries = _unit_rows(0, SIZE), _unit_rows(1, QUERIES)
  corpus = mesh_search.place(
    vectors, mesh=_mesh(data, model), chunk_rows=chunk_rows
  )
  found = mesh_search.search(corpus, queries, k=K)
  rows, scores = _brute_force(vectors, queries)
  np.testing.assert_array_equal(found.keys, rows)
  assert found.ids == [[str(r) for r in row] for row in rows.tolist()]
  np.testing.assert_allclose(found.scores, scores, rtol=0, atol=1e-5)
  assert found.scores.dtype == np.float32 and found.recall_target is None


def _tied(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Vectors and queries whose scores tie in crowds: 9 distinct vectors,
  scores in 1/8 steps (exact in float32, whatever the order of sums)."""
  rng = np.random.default_rng(seed)
  vectors = rng.integers(-1, 2, size=(SIZE, 2)).astype(np.float32) / 2
  queries = rng.integers(1, 3, size=(QUERIES, 2)).astype(np.float32) / 4
  scores = queries @ vectors.T
  kth = -np.sort(-scores, axis=1)[:, K - 1 : K]
  # More rows tie with the k-th best than fit: in every chunk, every device.
  assert ((scores == kth).sum(axis=1) > 8 * K).all()
  return vectors, queries


def test_ties_break_by_row_as_in_exact_search():
  vectors, queries = _tied(2)
  corpus = mesh_search.place(vectors, mesh=_mesh(), chunk_rows=32)
  found = mesh_search.search(corpus, queries, k=K)
  rows, scores = _brute_force(vectors, queries)
  np.testing.assert_array_equal(found.keys, rows)  # Stable argsort: by row.
  np.testing.assert_array_equal(found.scores, scores)


def test_k_beyond_the_corpus_and_a_small_corpus():
  vectors, queries = _unit_rows(3, 5), _unit_rows(4, 2)
  corpus = mesh_search.place(vectors, mesh=_mesh(), ids=list("abcde"))
  assert corpus.layout.rows_per_device == 1  # 3 of 8 blocks are padding.
  found = corpus.search(queries, k=K)
  rows, scores = _brute_force(vectors, queries, k=5)
  assert found.ids == [["abcde"[r] for r in row] for row in rows.tolist()]
  np.testing.assert_allclose(found.scores, scores, atol=1e-6)
  with pytest.raises(ValueError, match="d=64"):
    corpus.search(np.ones((1, 3), np.float32), k=1)
  empty = mesh_search.place(np.zeros((0, DIM), np.float32), mesh=_mesh())
  found = empty.search(queries, k=K)
  assert found.ids == [[], []] and found.scores.shape == (2, 0)


def test_approx_max_k_meets_its_recall_target():
  vectors, queries = _unit_rows(0, SIZE), _unit_rows(1, QUERIES)
  corpus = mesh_search.place(vectors, mesh=_mesh(), chunk_rows=64)
  found = mesh_search.search(
    corpus, queries, k=K, approx=True, recall_target=0.9
  )
  assert found.recall_target == 0.9
  rows, _ = _brute_force(vectors, queries)
  # On CPU approx_max_k is an exact top-k; on TPU only the target holds.
  assert index_core.recall_against_exact(found.keys, rows) >= 0.9


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_loaded_index_equals_the_whole_index_search(tmp_path, dtype):
  vectors, queries = _unit_rows(5, SIZE), _unit_rows(6, QUERIES)
  ids = [f"e{i:04d}" for i in np.random.default_rng(8).permutation(SIZE)]
  info = _write_index(tmp_path, ids, vectors, dtype=dtype)
  corpus = mesh_search.load_index(str(tmp_path), mesh=_mesh(), chunk_rows=32)
  assert corpus.vectors.dtype == np.dtype(dtype)
  assert corpus.layout.size == info["size"] == SIZE
  whole = index_core.Index.load(str(tmp_path))
  expected = whole.search(queries, k=K)
  found = mesh_search.search(corpus, queries, k=K)
  assert found.ids == expected.ids
  np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)


def test_a_loaded_index_breaks_ties_by_id(tmp_path):
  vectors, queries = _tied(9)
  ids = [f"e{i:04d}" for i in np.random.default_rng(9).permutation(SIZE)]
  info = _write_index(tmp_path, ids, vectors, shards=16)  # Blocks span 3.
  corpus = mesh_search.load_index(str(tmp_path), mesh=_mesh(), chunk_rows=32)
  found = mesh_search.search(corpus, queries, k=K)
  for row, query in enumerate(queries):
    partials = [
      index_core.search_shard(
        index_core.read_shard(str(tmp_path), info, number), query[None], k=K
      )[0]
      for number in range(len(info["shards"]))
    ]
    expected = index_core.merge_top_k(partials, k=K)  # The job's merge.
    pairs = zip(found.ids[row], found.scores[row].tolist(), strict=True)
    assert list(pairs) == expected


def test_loading_reads_each_shard_about_once(tmp_path, monkeypatch):
  vectors = _unit_rows(5, SIZE)
  ids = [f"e{i:04d}" for i in range(SIZE)]
  info = _write_index(tmp_path, ids, vectors, shards=6)
  reads = []
  read_shard = index_core.read_shard

  def counted(directory, info, number, **kwargs):
    reads.append(number)
    return read_shard(directory, info, number, **kwargs)

  monkeypatch.setattr(index_core, "read_shard", counted)
  mesh_search.load_index(str(tmp_path), mesh=_mesh(), chunk_rows=32)
  nonempty = sum(entry["count"] > 0 for entry in info["shards"])
  assert set(reads) == {
    n for n, entry in enumerate(info["shards"]) if entry["count"]
  }
  # A block spans few shards, one cached: no shard is read per device.
  assert len(reads) <= nonempty + 8


def test_load_index_refuses_an_unsharded_index_and_names_a_bad_shard(
  tmp_path,
):
  vectors = _unit_rows(5, 40)
  whole = index_core.Index(
    ids=[str(i) for i in range(40)], vectors=vectors, kind="exact", info={}
  )
  whole.save(str(tmp_path / "whole"))
  with pytest.raises(ValueError, match="not a sharded exact index"):
    mesh_search.load_index(str(tmp_path / "whole"), mesh=_mesh())
  info = _write_index(
    tmp_path / "sharded", [str(i) for i in range(40)], vectors
  )
  path = tmp_path / "sharded" / info["shards"][2]["file"]
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(index_core.IndexShardError, match="corrupted"):
    mesh_search.load_index(str(tmp_path / "sharded"), mesh=_mesh())


def test_an_int8_index_is_placed_as_bfloat16_and_keeps_recall(tmp_path):
  vectors, queries = _unit_rows(5, SIZE), _unit_rows(6, QUERIES)
  ids = [f"e{i:04d}" for i in np.random.default_rng(8).permutation(SIZE)]
  _write_index(tmp_path, ids, vectors, dtype="int8")
  corpus = mesh_search.load_index(str(tmp_path), mesh=_mesh(), chunk_rows=32)
  assert corpus.vectors.dtype == np.dtype("bfloat16")
  found = mesh_search.search(corpus, queries, k=K)
  rows, scores = _brute_force(vectors, queries)
  expected = [[ids[r] for r in row] for row in rows]
  recall = np.mean(
    [len(set(f) & set(e)) / K for f, e in zip(found.ids, expected, strict=True)]
  )
  assert recall >= 0.9
  np.testing.assert_allclose(found.scores, scores, atol=2e-2)
