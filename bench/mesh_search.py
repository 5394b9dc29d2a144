r"""Search on the device mesh against the retrieval job's shard-by-shard search.

  python bench/mesh_search.py [--size=100000] [--dim=1024] [--queries=256] \
    [--k=10] [--shard_rows=62500] [--devices=2] [--rounds=5]

Writes a sharded bfloat16 exact index of `size` random unit vectors (as
bench/retrieval_scale.py does: `shard_rows` per shard, each from its own
seed), then times, over `rounds` rounds (medians reported):
- `mesh`: `mesh_search.search` of all queries on an index streamed onto a
  mesh of `devices` devices by `mesh_search.load_index` (on a CPU,
  `--devices` fake devices share its cores);
- `mesh_approx`: the same with `approx=True` (recall_target 0.95; exact on
  a CPU, where approx_max_k is an exact top-k);
- `shards`: what each worker of the retrieval job does, every shard read
  and scored with `index.search_shard`, the partials merged per query with
  `index.merge_top_k`.

Prints one JSON object: queries/s of each, `load_seconds` (streaming the
index onto the mesh), `exact_equal` (mesh ids equal the shard-by-shard
ids, scores within 1e-5) and `approx_recall` (against exact).
"""

import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np
import retrieval_scale  # Its flags: --dim, --shard_rows, --queries, --k.
from absl import app, flags

from trak_jax import index as index_core
from trak_jax import mesh_search, partitioning

FLAGS = flags.FLAGS
flags.DEFINE_integer("size", 100_000, "Encodings in the index.")
flags.DEFINE_integer("devices", 2, "Fake CPU devices (CPU only).")
flags.DEFINE_integer("rounds", 5, "Timed rounds; medians are reported.")


def _median_seconds(call, rounds: int) -> tuple[float, object]:
  call()  # Compile.
  times, result = [], None
  for _ in range(rounds):
    start = time.perf_counter()
    result = call()
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


def main(argv):
  del argv
  # Before JAX starts its backend (no import does): fake CPU devices.
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" --xla_force_host_platform_device_count={FLAGS.devices}"
  )
  queries = retrieval_scale.unit_rows(0, FLAGS.queries, FLAGS.dim)
  mesh = partitioning.make_mesh()
  with tempfile.TemporaryDirectory() as directory:
    info = retrieval_scale.write_index(
      directory, size=FLAGS.size, dim=FLAGS.dim, shard_rows=FLAGS.shard_rows
    )
    start = time.perf_counter()
    corpus = mesh_search.load_index(directory, mesh=mesh)
    jax.block_until_ready(corpus.vectors)
    load_seconds = time.perf_counter() - start
    mesh_time, found = _median_seconds(
      lambda: mesh_search.search(corpus, queries, k=FLAGS.k), FLAGS.rounds
    )
    approx_time, approx = _median_seconds(
      lambda: mesh_search.search(corpus, queries, k=FLAGS.k, approx=True),
      FLAGS.rounds,
    )
    shards_time, merged = _median_seconds(
      lambda: retrieval_scale.search(directory, info, queries, k=FLAGS.k),
      FLAGS.rounds,
    )
  exact_equal = all(
    ids == [i for i, _ in m]
    and np.allclose(scores, [s for _, s in m], atol=1e-5)
    for ids, scores, m in zip(found.ids, found.scores, merged, strict=True)
  )
  result = {
    "size": FLAGS.size,
    "dim": FLAGS.dim,
    "dtype": info["dtype"],
    "queries": FLAGS.queries,
    "k": FLAGS.k,
    "devices": len(jax.devices()),
    "platform": jax.devices()[0].platform,
    "rounds": FLAGS.rounds,
    "load_seconds": load_seconds,
    "mesh_queries_per_second": FLAGS.queries / mesh_time,
    "mesh_approx_queries_per_second": FLAGS.queries / approx_time,
    "shards_queries_per_second": FLAGS.queries / shards_time,
    "exact_equal": exact_equal,
    "approx_recall": index_core.recall_against_exact(
      np.asarray(approx.keys), np.asarray(found.keys)
    ),
  }
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
