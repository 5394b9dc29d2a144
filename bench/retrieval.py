r"""ScaNN and exact search over 200,000 encodings; exact search's FLOP rate.

  python bench/retrieval.py --demo=out/demo [--copies=68] [--noise=2.4] \
    [--repeats=5] [--dims_per_block=8] [--reorder_k=1000] [--num_leaves=1]

The store: the demo's 2,943 TrackStar encodings (the store's φ, finished
with the demo Hessian's R^(-1/2) and normalised, as the index job does),
each replaced by `copies` perturbations of itself: Ḡ + noise · u / √d (u
standard normal, d = 4096) re-normalised. 68 copies give 200,124
encodings. The default noise (2.4 times the encoding's norm) is calibrated so
that the median cosine of an encoding with its nearest neighbour in the big
store equals that of the demo store (both are printed): a store of
paraphrase families about as tight as the demo's, not of near-duplicates,
which would make the problem artificially easy for a partitioning tree.

The queries: the demo's 360 queries, encoded with the demo checkpoint and
finished with the same Hessian, as the retrieval job does.

Prints one JSON object with medians over `repeats` timed runs (after one
warm-up):
- `exact`: `trak_jax.scoring.top_k` (the project's exact path), its
  queries/s and FLOP/s (2 · queries · d · N), next to a plain jitted
  [queries, d] @ [d, N] matmul in the same process, and their ratio
  (performance target: >= 0.5);
- `scann`: `trak_jax.index.Index` built with the given `ScannSpec` (the code
  the index job runs), its build seconds, serialized size, queries/s through
  `Index.search`, Recall@10 against exact search, and queries/s over exact
  (performance target: recall >= 0.95 at >= 10x); and where its time goes:
  the asymmetric-hashing scan alone (re-ordering only k candidates), the
  re-ordering (the rest), and the hashing codes read per query.

The default ScaNN settings (no tree, 8 dimensions per hashing block, 1,000
re-ordered) are the fastest tried that build within a few minutes here.
The index's own defaults (`gin/runs/encoder.gin`: 2 dimensions per block,
300 re-ordered) with the partitioning tree that `trak_jax/index.py` used to
build above 20,000 encodings (`--dims_per_block=2 --reorder_k=300
--num_leaves=447`, a fifth of the leaves searched) took 866 s to build on
this 2-core machine and reached Recall@10 0.38 at 7.5x exact's queries/s
(noise 2.1): whitened, normalised encodings are nearly isotropic, so the
tree prunes the true neighbours. The index now builds a tree only when
asked for one.
"""

import json
import os
import statistics
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import hessian as hessian_core
from trak_jax import index as index_core
from trak_jax import scoring
from trak_jax import store as store_lib

_DEMO = flags.DEFINE_string(
  "demo", "out/demo", "`make demo`'s output: model, data/, cli/."
)
_COPIES = flags.DEFINE_integer("copies", 68, "Encodings per demo encoding.")
_NOISE = flags.DEFINE_float("noise", 2.4, "Perturbation norm / encoding norm.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement.")
_K = flags.DEFINE_integer("k", 10, "Neighbours per query.")
_DIMS_PER_BLOCK = flags.DEFINE_integer("dims_per_block", 8, "ScaNN AH.")
_REORDER_K = flags.DEFINE_integer("reorder_k", 1000, "ScaNN re-ordering.")
_NUM_LEAVES = flags.DEFINE_integer(
  "num_leaves", 1, "ScaNN tree leaves (0 or 1: no tree)."
)
_LEAVES_TO_SEARCH = flags.DEFINE_integer(
  "num_leaves_to_search", 0, "ScaNN leaves searched (0: index.py's default)."
)


def finished_store(demo: str) -> tuple[np.ndarray, dict, Any]:
  """The demo store finished for its index: ([n, d], index info, R^(-1/2))."""
  info = index_core.Index.load(os.path.join(demo, "cli/index")).info
  config = encoder_lib.EncoderConfig.from_dict(info["encoder_config"])
  preconditioner, _ = hessian_core.load(os.path.join(demo, "cli/hessian"))
  finish = jax.jit(
    lambda phi: encoder_lib.finish(
      phi, preconditioner, normalize=config.normalize
    )
  )
  store = store_lib.EncodingStore(os.path.join(demo, "cli/store"))
  parts = [
    np.asarray(finish(np.asarray(batch.vectors, np.float32)))
    for batch in store.batches(1024)
  ]
  return np.concatenate(parts), config, preconditioner


def query_encodings(demo: str, config, preconditioner) -> np.ndarray:
  """The demo queries' finished encodings [queries, d]."""
  loaded = checkpoint_lib.load_checkpoint(os.path.join(demo, "model"))
  encoder = encoder_lib.from_checkpoint(
    loaded, config, preconditioner=preconditioner
  )
  queries = data_lib.read_queries(os.path.join(demo, "data/queries.jsonl"))
  return encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=32,
    max_len=loaded.model_config.max_len,
  ).features


def perturbed_store(
  vectors: np.ndarray, *, copies: int, noise: float, seed: int = 0
) -> np.ndarray:
  """[n * copies, d]: each block of n rows is the n vectors, perturbed.

  Row v of block c is normalise(v + noise · u / √d) with u ~ N(0, I), so the
  perturbation's norm is about `noise`. The originals are left out: each
  would be every copy's nearest neighbour, a hub no real store has.
  """
  rng = np.random.default_rng(seed)
  n, dim = vectors.shape
  out = np.empty((n * copies, dim), np.float32)
  for copy in range(copies):
    # [n, d] -> [n, d], unit rows.
    block = vectors + (noise / np.sqrt(dim)) * rng.standard_normal(
      (n, dim), dtype=np.float32
    )
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    out[copy * n : (copy + 1) * n] = block
  return out


def nearest_cosine(vectors: np.ndarray, *, sample: int = 300) -> float:
  """Median cosine of a row with its nearest other row (first rows)."""
  rows = np.random.default_rng(1).choice(len(vectors), sample, replace=False)
  cosines = vectors[rows] @ vectors.T  # [sample, n]
  cosines[np.arange(sample), rows] = -np.inf
  return float(np.median(cosines.max(axis=1)))


def median_seconds(run, repeats: int) -> tuple[float, Any]:
  """Median wall time of `run()` over `repeats` runs after one warm-up, and
  the last run's result."""
  result = run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = run()
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


def plain_matmul_seconds(queries, keys, *, repeats: int) -> float:
  """Median time of a jitted [q, d] @ [d, N] on arrays already on device."""
  matmul = jax.jit(lambda q, x: q @ x.T)  # [q, d] @ [d, N] -> [q, N]
  device_queries, device_keys = jnp.asarray(queries), jnp.asarray(keys)
  seconds, _ = median_seconds(
    lambda: matmul(device_queries, device_keys).block_until_ready(), repeats
  )
  return seconds


def bench_exact(queries, keys, *, k: int, repeats: int) -> tuple[dict, Any]:
  """scoring.top_k against a plain jitted matmul of the same shapes."""
  flops = 2.0 * queries.shape[0] * keys.shape[1] * keys.shape[0]
  matmul_seconds = plain_matmul_seconds(queries, keys, repeats=repeats)
  top_k_seconds, exact = median_seconds(
    lambda: scoring.top_k(queries, keys, k=k), repeats
  )
  return {
    "seconds": top_k_seconds,
    "queries_per_second": len(queries) / top_k_seconds,
    "flop_per_second": flops / top_k_seconds,
    "matmul_seconds": matmul_seconds,
    "matmul_flop_per_second": flops / matmul_seconds,
    "top_k_over_matmul": matmul_seconds / top_k_seconds,
  }, exact


def directory_bytes(directory: str) -> int:
  return sum(
    os.path.getsize(os.path.join(root, name))
    for root, _, names in os.walk(directory)
    for name in names
  )


def bench_scann(queries, keys, exact, *, spec, k: int, repeats: int) -> dict:
  """Builds the project's ScaNN index over `keys`; times and checks it."""
  ids = [str(i) for i in range(len(keys))]
  start = time.perf_counter()
  index = index_core.Index.build(
    ids=ids, vectors=keys, kind="scann", spec=spec, info={}
  )
  build_seconds = time.perf_counter() - start
  seconds, found = median_seconds(lambda: index.search(queries, k=k), repeats)
  # Where the time goes: the hashing scan alone (re-ordering only k).
  scan_seconds, _ = median_seconds(
    lambda: index.searcher.search_batched(
      queries, final_num_neighbors=k, pre_reorder_num_neighbors=k
    ),
    repeats,
  )
  rows = np.asarray([[int(i) for i in row] for row in found.ids])
  with tempfile.TemporaryDirectory() as directory:
    index.searcher.serialize(directory)
    scann_bytes = directory_bytes(directory)
  return {
    "spec": index.info["scann"],
    "build_seconds": build_seconds,
    "scann_bytes": scann_bytes,
    "index_bytes": scann_bytes + keys.nbytes,  # + vectors.npy
    "seconds": seconds,
    "queries_per_second": len(queries) / seconds,
    "recall_at_10": index_core.recall_against_exact(rows, exact.indices),
    "hashing_scan_seconds": scan_seconds,
    "reorder_seconds": seconds - scan_seconds,
    # Asymmetric-hashing codes read per query: 4 bits per block.
    "code_bytes_per_query": len(keys)
    * keys.shape[1]
    // spec.dims_per_block
    // 2,
  }


def main(argv):
  del argv
  demo_vectors, config, preconditioner = finished_store(_DEMO.value)
  queries = query_encodings(_DEMO.value, config, preconditioner)
  keys = perturbed_store(demo_vectors, copies=_COPIES.value, noise=_NOISE.value)
  results = {
    "store": {
      "encodings": len(keys),
      "dim": keys.shape[1],
      "demo_encodings": len(demo_vectors),
      "copies": _COPIES.value,
      "noise": _NOISE.value,
      "demo_nearest_cosine": nearest_cosine(demo_vectors),
      "store_nearest_cosine": nearest_cosine(keys),
    },
    "queries": len(queries),
    "repeats": _REPEATS.value,
  }
  results["exact"], exact = bench_exact(
    queries, keys, k=_K.value, repeats=_REPEATS.value
  )
  spec = index_core.ScannSpec(
    num_leaves=_NUM_LEAVES.value or None,
    num_leaves_to_search=_LEAVES_TO_SEARCH.value or None,
    dims_per_block=_DIMS_PER_BLOCK.value,
    reorder_k=_REORDER_K.value,
  )
  results["scann"] = bench_scann(
    queries, keys, exact, spec=spec, k=_K.value, repeats=_REPEATS.value
  )
  results["scann_over_exact_qps"] = (
    results["scann"]["queries_per_second"]
    / results["exact"]["queries_per_second"]
  )
  results["targets"] = {
    "scann_recall_0.95_at_10x": results["scann"]["recall_at_10"] >= 0.95
    and results["scann_over_exact_qps"] >= 10,
    "exact_at_half_matmul": results["exact"]["top_k_over_matmul"] >= 0.5,
  }
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
