r"""Peak memory of sharded exact retrieval as the index grows.

  python bench/retrieval_scale.py [--sizes=250000,500000,1000000] \
    [--dim=1024] [--shard_rows=62500] [--queries=256] [--k=10]

For each size N, a fresh process writes a sharded exact index of N random
unit vectors (d = `dim`, bfloat16, `shard_rows` per shard: N / shard_rows
shards, each from its own seed) with `trak_jax.index.write_shard`, then
searches it as the retrieval job does: every shard read (checksum checked)
and scored against all queries with `search_shard`, the partial top-k
merged with `merge_top_k`. Its peak RSS (`ru_maxrss`) is measured in the
process, so sizes do not share memory. Random vectors stand in for finished
encodings (whitened and normalised encodings are nearly isotropic; see
bench/retrieval.py); the figures are about memory and speed, not recall.

Prints one JSON object:
- `sizes`, `peak_rss_mib` per size, `peak_rss_ratio_4x` (peak RSS at the
  largest size over that at the smallest: about 1 when memory is one shard,
  about 4 when it grows with the index);
- `queries_per_second` per size (search only, after the index is written:
  reading and checking each shard, scoring, merging);
- `search_gflops` (2 · queries · d · N over that time), `matmul_gflops`
  (a plain jitted float32 [queries, d] @ [d, shard_rows] on arrays already
  on device, measured after the search, scaled to N rows) and their ratio
  `gflops_fraction_of_matmul` per size (target: >= 0.6);
- `seconds` per size: the search's total and its reading (with the
  checksum), scoring (`search_shard`: the shard's rows on the device and
  their top-k) and merging; `scoring_fraction_of_matmul`, the plain matmul's
  time over the scoring's: the search without its reading;
- `exact_equal`: at the smallest size, whether the merged result has the
  ids of exact search over the whole index (`Index.load`, then
  `Index.search`), and scores within 1e-5.
"""

import json
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from trak_jax import index as index_core

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["250000", "500000", "1000000"], "Index sizes.")
flags.DEFINE_integer("dim", 1024, "Encoding dimension.")
flags.DEFINE_integer("shard_rows", 62_500, "Encodings per index shard.")
flags.DEFINE_integer("queries", 256, "Queries searched.")
flags.DEFINE_integer("k", 10, "Neighbours per query.")
flags.DEFINE_integer("child_size", 0, "Internal: run one size, print JSON.")
flags.DEFINE_bool("child_check", False, "Internal: compare with Index.load.")


def unit_rows(seed: int, rows: int, dim: int) -> np.ndarray:
  """[rows, dim] float32 random unit vectors."""
  rng = np.random.default_rng(seed)
  vectors = rng.standard_normal((rows, dim), dtype=np.float32)
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_index(directory: str, *, size: int, dim: int, shard_rows: int):
  """A sharded bfloat16 exact index of `size` random unit vectors."""
  num_shards = -(-size // shard_rows)
  entries = []
  for shard in range(num_shards):
    rows = min(shard_rows, size - shard * shard_rows)
    ids = [f"e{shard * shard_rows + i:09d}" for i in range(rows)]
    entries.append(
      index_core.write_shard(
        directory,
        index=shard,
        num_shards=num_shards,
        ids=ids,
        vectors=unit_rows(1 + shard, rows, dim),
        dtype="bfloat16",
      )
    )
  info = {
    "kind": "exact",
    "layout": index_core.SHARDED,
    "dtype": "bfloat16",
    "dim": dim,
    "size": size,
    "shards": entries,
  }
  index_core.write_info(directory, info)
  return info


def search(directory: str, info: dict, queries: np.ndarray, *, k: int):
  """Shard by shard, as the retrieval job: a merged top-k per query, and
  the seconds spent reading (with the checksum), scoring and merging."""
  merged = [[] for _ in queries]
  seconds = {"read": 0.0, "score": 0.0, "merge": 0.0}
  for shard in range(len(info["shards"])):
    start = time.perf_counter()
    rows = index_core.read_shard(directory, info, shard)
    read = time.perf_counter()
    partials = index_core.search_shard(rows, queries, k=k)
    scored = time.perf_counter()
    merged = [
      index_core.merge_top_k([m, p], k=k)
      for m, p in zip(merged, partials, strict=True)
    ]
    seconds["read"] += read - start
    seconds["score"] += scored - read
    seconds["merge"] += time.perf_counter() - scored
  return merged, seconds


def matmul_seconds(queries: np.ndarray, *, rows: int, dim: int) -> float:
  """Best time of a plain jitted float32 [queries, d] @ [d, rows] on arrays
  already on device (the shape `search_shard` scores, a chunk at a time)."""
  import jax
  import jax.numpy as jnp

  matmul = jax.jit(lambda q, x: q @ x.T)  # [q, d] @ [d, rows] -> [q, rows]
  keys = jnp.asarray(unit_rows(99, rows, dim))
  device_queries = jnp.asarray(queries)
  matmul(device_queries, keys).block_until_ready()  # Compile.
  times = []
  for _ in range(3):
    start = time.perf_counter()
    matmul(device_queries, keys).block_until_ready()
    times.append(time.perf_counter() - start)
  return min(times)


def run_size(size: int) -> dict:
  queries = unit_rows(0, FLAGS.queries, FLAGS.dim)
  with tempfile.TemporaryDirectory() as directory:
    info = write_index(
      directory, size=size, dim=FLAGS.dim, shard_rows=FLAGS.shard_rows
    )
    search(directory, info, queries, k=FLAGS.k)  # Compile, read once.
    start = time.perf_counter()
    merged, parts = search(directory, info, queries, k=FLAGS.k)
    seconds = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flops = 2.0 * len(queries) * FLAGS.dim * size
    shard_rows = min(FLAGS.shard_rows, size)
    matmul = matmul_seconds(queries, rows=shard_rows, dim=FLAGS.dim)
    result = {
      "size": size,
      "peak_rss_mib": rss_mib,
      "queries_per_second": len(queries) / seconds,
      "search_gflops": flops / seconds / 1e9,
      "matmul_gflops": flops / (matmul * size / shard_rows) / 1e9,
      "seconds": {"total": seconds, **parts},
      "scoring_fraction_of_matmul": matmul * size / shard_rows / parts["score"],
    }
    if FLAGS.child_check:
      found = index_core.Index.load(directory).search(queries, k=FLAGS.k)
      result["exact_equal"] = all(
        [i for i, _ in m] == ids
        and np.allclose([s for _, s in m], scores, atol=1e-5)
        for m, ids, scores in zip(merged, found.ids, found.scores, strict=True)
      )
  return result


def child(size: int, *, check: bool) -> dict:
  command = [
    sys.executable,
    __file__,
    f"--child_size={size}",
    f"--dim={FLAGS.dim}",
    f"--shard_rows={FLAGS.shard_rows}",
    f"--queries={FLAGS.queries}",
    f"--k={FLAGS.k}",
    f"--child_check={check}",
  ]
  output = subprocess.run(command, check=True, capture_output=True, text=True)
  return json.loads(output.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS.child_size:
    print(json.dumps(run_size(FLAGS.child_size)))
    return
  sizes = [int(s) for s in FLAGS.sizes]
  runs = [child(size, check=False) for size in sizes]
  check = child(sizes[0], check=True)
  rss = [r["peak_rss_mib"] for r in runs]
  print(
    json.dumps(
      {
        "sizes": sizes,
        "dim": FLAGS.dim,
        "dtype": "bfloat16",
        "shard_rows": FLAGS.shard_rows,
        "queries": FLAGS.queries,
        "peak_rss_mib": rss,
        "peak_rss_ratio_4x": rss[-1] / rss[0],
        "queries_per_second": [r["queries_per_second"] for r in runs],
        "search_gflops": [r["search_gflops"] for r in runs],
        "matmul_gflops": [r["matmul_gflops"] for r in runs],
        "gflops_fraction_of_matmul": [
          r["search_gflops"] / r["matmul_gflops"] for r in runs
        ],
        "scoring_fraction_of_matmul": [
          r["scoring_fraction_of_matmul"] for r in runs
        ],
        "seconds": [r["seconds"] for r in runs],
        "exact_equal": check["exact_equal"],
      },
      indent=2,
    )
  )


if __name__ == "__main__":
  app.run(main)
