r"""Recall@10 of compact index dtypes, and of ScaNN's int8 brute force.

  python bench/compact_index.py [--encodings=100000] [--dim=1024] \
    [--families=1500] [--noise=2.4] [--queries=256] [--reorder_k=100]

The store stands in for finished TrackStar encodings as bench/retrieval.py
builds its: `families` random unit "encodings", each replaced by
encodings / families perturbations of itself (normalise(v + noise · u /
√d), `perturbed_store`), so rows come in paraphrase families about as tight
as the demo's at the default noise. The queries are further perturbations
of random family centres (new rows, not rows of the store).

For each index dtype (`trak_jax.index.in_dtype`: bfloat16, int8 with a
per-row scale) it searches the rows in that dtype with the project's exact
search (`scoring.top_k`, what `index.search_shard` runs) and prints its
Recall@10 against float32 exact search, and the largest absolute score
error of the top 10. For ScaNN, a brute-force searcher with int8
quantisation (`score_brute_force(quantize=True)`), with and without exact
re-ordering of `reorder_k` candidates: build seconds, queries/s, Recall@10.
Prints one JSON object; the target for int8 is recall >= 0.99.
"""

import json
import time

import numpy as np
from absl import app, flags

from trak_jax import index as index_core
from trak_jax import scoring

_ENCODINGS = flags.DEFINE_integer("encodings", 100_000, "Rows in the store.")
_DIM = flags.DEFINE_integer("dim", 1024, "Encoding dimension.")
_FAMILIES = flags.DEFINE_integer("families", 1500, "Families of rows.")
_NOISE = flags.DEFINE_float("noise", 2.4, "Perturbation norm / row norm.")
_QUERIES = flags.DEFINE_integer("queries", 256, "Queries.")
_K = flags.DEFINE_integer("k", 10, "Neighbours compared.")
_REORDER_K = flags.DEFINE_integer("reorder_k", 100, "ScaNN re-ordering.")


def unit(rows: np.ndarray) -> np.ndarray:
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def perturbed(centres: np.ndarray, rows: int, *, noise: float, rng):
  """[rows, d] unit perturbations of centres taken in turn."""
  dim = centres.shape[1]
  picked = centres[np.arange(rows) % len(centres)]
  return unit(
    picked
    + (noise / np.sqrt(dim))
    * rng.standard_normal((rows, dim), dtype=np.float32)
  ).astype(np.float32)


def timed(run):
  run()  # Warm-up (compile).
  start = time.perf_counter()
  result = run()
  return time.perf_counter() - start, result


def bench_dtype(queries, keys, exact, *, dtype: str, k: int) -> dict:
  stored = index_core.in_dtype(keys, dtype)
  seconds, found = timed(lambda: scoring.top_k(queries, stored, k=k))
  return {
    "recall_at_10": index_core.recall_against_exact(
      found.indices, exact.indices
    ),
    "max_score_error": float(np.abs(found.scores - exact.scores).max()),
    "queries_per_second": len(queries) / seconds,
    "bytes_per_row": keys.shape[1] * (2 if dtype == "bfloat16" else 1)
    + (4 if dtype == "int8" else 0),
  }


def bench_scann_int8(queries, keys, exact, *, k: int, reorder_k: int):
  import scann

  start = time.perf_counter()
  builder = scann.scann_ops_pybind.builder(keys, k, "dot_product")
  searcher = builder.score_brute_force(quantize=True).reorder(reorder_k).build()
  build_seconds = time.perf_counter() - start
  results = {"build_seconds": build_seconds, "reorder_k": reorder_k}
  for name, before in (("reordered", reorder_k), ("int8_only", k)):
    seconds, (rows, _) = timed(
      lambda before=before: searcher.search_batched(
        queries, final_num_neighbors=k, pre_reorder_num_neighbors=before
      )
    )
    results[name] = {
      "recall_at_10": index_core.recall_against_exact(
        np.asarray(rows), exact.indices
      ),
      "queries_per_second": len(queries) / seconds,
    }
  return results


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  dim, k = _DIM.value, _K.value
  centres = unit(rng.standard_normal((_FAMILIES.value, dim), np.float32))
  keys = perturbed(centres, _ENCODINGS.value, noise=_NOISE.value, rng=rng)
  picked = rng.choice(len(centres), _QUERIES.value)
  queries = perturbed(centres[picked], len(picked), noise=_NOISE.value, rng=rng)
  exact_seconds, exact = timed(lambda: scoring.top_k(queries, keys, k=k))
  results = {
    "encodings": len(keys),
    "dim": dim,
    "families": _FAMILIES.value,
    "noise": _NOISE.value,
    "queries": len(queries),
    "float32_queries_per_second": len(queries) / exact_seconds,
  }
  for dtype in ("bfloat16", "int8"):
    results[dtype] = bench_dtype(queries, keys, exact, dtype=dtype, k=k)
  results["scann_brute_force_int8"] = bench_scann_int8(
    queries, keys, exact, k=k, reorder_k=_REORDER_K.value
  )
  results["int8_recall_at_least_0.99"] = results["int8"]["recall_at_10"] >= 0.99
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
