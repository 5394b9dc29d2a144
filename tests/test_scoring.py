"""Chunked top-k and the ScaNN index against brute force."""

import numpy as np
import pytest

from trak_jax import index as index_lib
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


@pytest.mark.parametrize(
  "spec",
  [
    index_lib.ScannSpec(),  # Small: hashing and re-ordering, no tree.
    index_lib.ScannSpec(num_leaves=30, num_leaves_to_search=10),
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
  built = index_lib.Index.build(
    ids=ids,
    vectors=vectors,
    kind="scann",
    spec=spec,
    info={},
    recall_rows=np.arange(200),
  )
  assert built.info["recall_at_10"]["recall"] >= 0.95
  built.save(str(tmp_path / "index"))
  loaded = index_lib.Index.load(str(tmp_path / "index"))
  queries = vectors[100:150] + 0.05 * rng.normal(size=(50, 32))
  found = loaded.search(queries, k=10)
  exact = index_lib.Index(ids=ids, vectors=vectors, kind="exact", info={})
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
    index_lib._without_own_rows(rows, np.array([1, 9]), 2), [[3, 2], [0, 4]]
  )
  # Isotropic encodings queried with themselves: with its own row counted,
  # ScaNN's recall would include a free 1 in 10 per query.
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(2000, 64)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  built = index_lib.Index.build(
    ids=[str(i) for i in range(2000)],
    vectors=vectors,
    kind="scann",
    spec=index_lib.ScannSpec(dims_per_block=8, reorder_k=20),
    info={},
    recall_rows=np.arange(100),
  )
  honest = built.info["recall_at_10"]["recall"]
  counted = built.measure_recall(vectors[:100])["recall"]
  assert counted >= honest + 0.05
