"""Mesh search over a global mesh of two JAX processes equals exact search.

Each process is this module run as a subprocess (`python -m
tests.test_mesh_search_distributed`) with two fake CPU devices; they join
at a coordinator on localhost (`trak_jax.distributed`, gloo collectives),
load one sharded exact index onto the (data=2, model=2) mesh over their
four devices and search it as one program.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests import test_mesh_search
from trak_jax import index as index_core

SIZE, DIM, QUERIES, K = 203, 32, 6, 10
CHUNK_ROWS = 16  # Several chunks per device's block of 51 (-> 64) rows.
PROCESSES, DEVICES_PER_PROCESS = 2, 2


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _write_inputs(directory) -> np.ndarray:
  """A sharded index with tied rows under other ids, and queries."""
  vectors = test_mesh_search._unit_rows(3, SIZE, DIM)
  vectors[SIZE - 20 :] = vectors[:20]  # Ties: broken by id.
  ids = [f"ex{(i * 37) % SIZE:04d}" for i in range(SIZE)]
  test_mesh_search._write_index(directory / "index", ids, vectors, shards=5)
  queries = test_mesh_search._unit_rows(4, QUERIES, DIM)
  queries[0] = vectors[3]  # Its own row and its duplicate tie on top.
  np.save(directory / "queries.npy", queries)
  return queries


def _run_processes(directory) -> list[dict]:
  port = _free_port()
  env = {
    **os.environ,
    "XLA_FLAGS": (
      f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"
    ),
    "JAX_PLATFORMS": "cpu",
  }
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "tests.test_mesh_search_distributed",
        str(directory),
        f"localhost:{port}",
        str(process_id),
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for process_id in range(PROCESSES)
  ]
  for proc in procs:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
  return [
    json.loads((directory / f"result-{i}.json").read_text())
    for i in range(PROCESSES)
  ]


def test_two_processes_search_one_global_mesh_as_exact_search(tmp_path):
  queries = _write_inputs(tmp_path)
  results = _run_processes(tmp_path)
  whole = index_core.Index.load(str(tmp_path / "index"))
  expected = whole.search(queries, k=K)
  assert expected.ids[0][:2] == sorted(expected.ids[0][:2])  # A tie, by id.
  for process, result in enumerate(results):
    assert result["process_index"] == process
    assert result["process_count"] == PROCESSES
    assert result["local_devices"] == DEVICES_PER_PROCESS
    assert result["mesh"] == {"data": 2, "model": 2}
    for name in ("exact", "approx"):
      assert result[name]["ids"] == expected.ids  # Ties broken by id too.
      np.testing.assert_allclose(
        result[name]["scores"], expected.scores, atol=1e-5
      )
    assert result["exact"]["recall_target"] is None
    assert result["approx"]["recall_target"] == 0.9
  # Each process read only its own devices' blocks: together every row once.
  rows = sorted(r for result in results for r in map(tuple, result["read"]))
  assert all(rows and result["read"] for result in results)
  assert rows[0][0] == 0 and rows[-1][1] == SIZE
  assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
  for a in results[0]["read"]:
    assert tuple(a) not in map(tuple, results[1]["read"])


def _worker(directory: str, coordinator: str, process_id: int) -> None:
  """One process of the test: joins, loads, searches, writes its result."""
  from trak_jax import distributed

  distributed.initialize(
    coordinator_address=coordinator,
    num_processes=PROCESSES,
    process_id=process_id,
  )
  import jax

  from trak_jax import mesh_search, partitioning

  read = []
  rows = mesh_search._ShardReader.rows

  def logged(self, start, stop):
    read.append((int(start), int(stop)))
    return rows(self, start, stop)

  mesh_search._ShardReader.rows = logged  # Which rows this process read.
  mesh = partitioning.make_mesh(data=-1, model=2)
  corpus = mesh_search.load_index(
    os.path.join(directory, "index"), mesh=mesh, chunk_rows=CHUNK_ROWS
  )
  queries = np.load(os.path.join(directory, "queries.npy"))
  found = {
    "exact": corpus.search(queries, k=K),
    "approx": corpus.search(queries, k=K, approx=True, recall_target=0.9),
  }
  distributed.barrier("searched")
  result = {
    "process_index": jax.process_index(),
    "process_count": jax.process_count(),
    "local_devices": jax.local_device_count(),
    "mesh": dict(mesh.shape),
    "read": sorted(r for r in read if r[0] < r[1]),
    **{
      name: {
        "ids": neighbors.ids,
        "scores": neighbors.scores.tolist(),
        "recall_target": neighbors.recall_target,
      }
      for name, neighbors in found.items()
    },
  }
  with open(os.path.join(directory, f"result-{process_id}.json"), "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
