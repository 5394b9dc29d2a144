"""Two JAX processes encode a corpus together, on one mesh across both.

Each process is `trak-jax-encode --distributed` in a subprocess with two CPU
devices; they meet at a coordinator on localhost and run the encoder on a
(data=2, model=2) mesh over the four devices of both, talking through gloo.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from pipelines import encode_distributed, encode_lib
from tests.pipelines import test_multiprocess
from trak_jax import store as store_lib

NUM_SHARDS = 3
BATCH = 8
BINDINGS = [
  "encoder.preset.name = 'trackstar'",
  "projection.ProjectionSpec.dim = 128",
]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def encode_with_processes(tiny_run, output_dir, *, num_processes, extra=()):
  """Runs the encode binary as `num_processes` processes; their JSON."""
  port = free_port()
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    "TRAK_JAX_DISTRIBUTED": "1",
  }
  args = [
    sys.executable,
    "-m",
    "pipelines.encode_main",
    f"--corpus={tiny_run['corpus']}",
    f"--checkpoint={tiny_run['checkpoint']}",
    f"--output_dir={output_dir}",
    f"--gin_bindings=encode_lib.EncodeOptions.num_shards = {NUM_SHARDS}",
    f"--gin_bindings=encode_lib.EncodeOptions.batch_size = {BATCH}",
    "--gin_bindings=encode_lib.EncodeOptions.mesh_model = 2",
    *[f"--gin_bindings={b}" for b in BINDINGS],
    f"--coordinator_address=localhost:{port}",
    f"--num_processes={num_processes}",
    *extra,
  ]
  procs = [
    subprocess.Popen(
      [*args, f"--process_id={i}"],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(num_processes)
  ]
  outputs = []
  for proc in procs:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    outputs.append(stdout)
  return outputs


def assert_rows_close(actual, expected, rtol=2e-4):
  """Equal up to float32 reduction order: within rtol of each row's scale
  (the model-sharded mesh sums partial products in another order)."""
  scale = np.abs(expected).max(axis=1, keepdims=True)
  np.testing.assert_array_less(
    np.abs(actual - expected), np.broadcast_to(rtol * scale, actual.shape)
  )


def counters(stdout: str) -> dict:
  """The counters object the binary prints (after gloo's own lines)."""
  start = stdout.index('{\n  "counters"')
  return json.JSONDecoder().raw_decode(stdout, start)[0]["counters"]


@pytest.fixture(scope="module")
def two_processes(tiny_run, tmp_path_factory):
  output_dir = tmp_path_factory.mktemp("two_processes") / "store"
  stdouts = encode_with_processes(tiny_run, output_dir, num_processes=2)
  return output_dir, [counters(s) for s in stdouts]


def test_two_processes_write_the_single_process_store(
  tiny_run, two_processes, tmp_path
):
  output_dir, _ = two_processes
  single = test_multiprocess.encode(tiny_run, tmp_path / "single", [])
  multi = store_lib.EncodingStore(str(output_dir))
  a, b = single.load(), multi.load()
  assert len(b.ids) == len(set(b.ids))  # No duplicate id.
  assert a.ids == b.ids  # None missing, none extra, same shards and order.
  assert_rows_close(b.vectors, a.vectors)
  np.testing.assert_allclose(b.losses, a.losses, rtol=1e-5)
  np.testing.assert_array_equal(a.num_tokens, b.num_tokens)
  assert multi.manifest["counts"] == single.manifest["counts"]
  assert multi.fingerprint == single.fingerprint


def test_the_mesh_spans_both_processes_which_split_the_shards(two_processes):
  output_dir, results = two_processes
  assert sorted(r["process"] for r in results) == [0, 1]
  for result in results:
    assert result["mesh"] == {
      "data": 2,
      "model": 2,
      "devices": 4,
      "processes": 2,
    }
  written = [r["shards_written"] for r in results]
  assert written == [2, 1]  # Shards 0 and 2, and shard 1.
  manifest = json.loads((output_dir / "manifest.json").read_text())
  assert (
    sum(r["examples_encoded"] for r in results)
    == (manifest["counts"]["encoded"])
  )
  # Both processes stepped together, the one with less work on empty rows.
  assert results[0]["steps"] == results[1]["steps"]
  assert (output_dir / store_lib.COMPLETED).exists()


def test_a_rerun_skips_the_shards_that_are_done(tiny_run, two_processes):
  output_dir, _ = two_processes
  shards = sorted(output_dir.glob("*.tfrecord"))
  mtimes = [p.stat().st_mtime_ns for p in shards]
  stdouts = encode_with_processes(tiny_run, output_dir, num_processes=2)
  assert [counters(s)["shards_written"] for s in stdouts] == [0, 0]
  assert [p.stat().st_mtime_ns for p in shards] == mtimes
  assert store_lib.EncodingStore(str(output_dir)).manifest["counts"][
    "encoded"
  ] == len(store_lib.EncodingStore(str(output_dir)).load().ids)


def test_one_process_writes_the_beam_jobs_store(tiny_run, tmp_path):
  options = encode_lib.EncodeOptions(
    corpus=tiny_run["corpus"],
    checkpoint=tiny_run["checkpoint"],
    output_dir=str(tmp_path / "loop"),
    encoder_config=test_multiprocess.CONFIG,
    num_shards=NUM_SHARDS,
    batch_size=BATCH,
  )
  result = encode_distributed.run(options)
  assert result["mesh"]["processes"] == 1
  single = test_multiprocess.encode(tiny_run, tmp_path / "beam", [])
  loop = store_lib.EncodingStore(options.output_dir)
  a, b = single.load(), loop.load()
  assert a.ids == b.ids
  assert_rows_close(b.vectors, a.vectors)
  assert result["manifest"]["counts"] == single.manifest["counts"]
  assert result["examples_encoded"] == len(b.ids)
