"""The cost planner against measured sizes and its own arithmetic."""

import os

import numpy as np
import pytest

from trak_jax import encoder as encoder_lib
from trak_jax import plan as plan_lib
from trak_jax import store as store_lib


def test_store_size_estimate_matches_a_written_store(tmp_path):
  dim, count = 256, 300
  fingerprint = encoder_lib.Fingerprint("c", "{}", "{}", 0, dim, "float32")
  rng = np.random.default_rng(0)
  records = [
    store_lib.EncodedRecord(
      f"p{i:05d}", rng.normal(size=dim).astype(np.float32), 1.5, 40
    )
    for i in range(count)
  ]
  store_lib.write_shard(
    str(tmp_path),
    index=0,
    num_shards=1,
    records=records,
    rejected=[],
    fingerprint=fingerprint,
  )
  actual = os.path.getsize(tmp_path / store_lib.shard_name(0, 1))
  estimate = plan_lib.plan(
    corpus_tokens=count * 40,
    params=1e6,
    dim=dim,
    num_examples=count,
    id_bytes=6,
    accelerator="cpu-2core",
  ).store_bytes
  assert estimate == pytest.approx(actual, rel=0.1)


def test_hours_follow_flops_chips_and_calibration():
  base = plan_lib.plan(corpus_tokens=1e9, params=1e8, dim=4096)
  assert base.encode_flops == pytest.approx(6e17)
  double = plan_lib.plan(corpus_tokens=1e9, params=1e8, dim=4096, chips=2)
  assert double.encode_hours == pytest.approx(base.encode_hours / 2)
  # Calibrated with the demo bench: 1.06M params at 7,727 tokens/s.
  calibrated = plan_lib.plan(
    corpus_tokens=94_232,
    params=1.06e6,
    dim=4096,
    measured_tokens_per_second=7727,
    measured_params=1.06e6,
  )
  assert calibrated.encode_hours * 3600 == pytest.approx(94_232 / 7727)
  full = plan_lib.plan(corpus_tokens=1, params=1, dim=65536).hessian_bytes
  blocks = plan_lib.plan(
    corpus_tokens=1, params=1, dim=65536, hessian_blocks=16
  )
  assert blocks.hessian_bytes == pytest.approx(full / 16)
  with pytest.raises(ValueError, match="unknown accelerator"):
    plan_lib.plan(corpus_tokens=1, params=1, dim=8, accelerator="abacus")


def test_retrieval_memory_is_one_shard_and_time_follows_workers():
  small = plan_lib.plan(
    corpus_tokens=1e9,
    params=1e8,
    dim=1024,
    num_examples=1e6,
    chips=8,
    shard_examples=1e6,
  )
  large = plan_lib.plan(
    corpus_tokens=4e9,
    params=1e8,
    dim=1024,
    num_examples=4e6,
    chips=8,
    shard_examples=1e6,
  )
  assert small.retrieve_flops == pytest.approx(2 * 1000 * 1e6 * 1024)
  assert large.retrieve_flops == pytest.approx(4 * small.retrieve_flops)
  # One 1M-row shard per worker, whatever the store's size.
  assert large.retrieve_worker_bytes == small.retrieve_worker_bytes
  shard = 1e6 * (1024 * 2 + 16)
  queries = 1000 * 1024 * 4 + 8192 * (1024 + 1000) * 4
  assert small.retrieve_worker_bytes == pytest.approx(shard + queries)
  # Four shards on four of the eight chips: the same time as one on one.
  assert (small.retrieve_workers, large.retrieve_workers) == (1, 4)
  assert large.retrieve_hours == pytest.approx(small.retrieve_hours)


def test_retrieval_shards_fit_the_workers_memory():
  plan = plan_lib.plan(
    corpus_tokens=160e9,
    params=8e9,
    dim=65536,
    num_queries=10,
    worker_memory_bytes=16 * 2**30,
  )
  assert plan.retrieve_worker_bytes <= 16 * 2**30
  assert plan.retrieve_worker_bytes > 0.4 * 16 * 2**30


def test_retrieval_stage_against_a_hand_computation():
  # 1M encodings, d = 4096, 500 queries, int8 index, 4 chips of a TPU v4
  # (275 TFLOP/s at 40%), shards of 250k rows, 100 MB/s reads.
  plan = plan_lib.plan(
    corpus_tokens=1e9,
    params=1e8,
    dim=4096,
    num_examples=1e6,
    chips=4,
    num_queries=500,
    shard_examples=250_000,
    index_dtype="int8",
    id_bytes=16,
    retrieval_efficiency=0.5,
    read_bytes_per_second=100e6,
  )
  row = 4096 + 4 + 16  # int8 codes, float32 scale, id.
  flops = 2 * 500 * 1e6 * 4096
  compute = flops / (275e12 * 0.4 * 0.5)  # 0.074 s
  read = 1e6 * row / 100e6  # 41.2 s: reading dominates.
  assert plan.retrieve_flops == pytest.approx(flops)
  assert plan.retrieve_index_bytes == pytest.approx(1e6 * row)
  assert plan.retrieve_workers == 4
  assert plan.retrieve_hours == pytest.approx(max(compute, read) / 4 / 3600)
  assert plan.retrieve_worker_bytes == pytest.approx(
    250_000 * row + 500 * 4096 * 4 + 8192 * (4096 + 500) * 4
  )
  bf16 = plan_lib.plan(
    corpus_tokens=1e9, params=1e8, dim=4096, num_examples=1e6, chips=4
  )
  assert bf16.retrieve_worker_bytes > plan.retrieve_worker_bytes
  with pytest.raises(ValueError, match="index dtype 'int4'"):
    plan_lib.plan(corpus_tokens=1, params=1, dim=8, index_dtype="int4")


def test_the_cpu_retrieval_rate_gives_the_measured_search_back():
  # bench/retrieval_scale.py: 256 queries over 1M bf16 encodings of
  # d = 1024 at 22.7 queries/s (46.4 GFLOP/s), one worker.
  plan = plan_lib.plan(
    corpus_tokens=1e9,
    params=1e8,
    dim=1024,
    num_examples=1e6,
    num_queries=256,
    accelerator="cpu-2core",
    retrieval_efficiency=plan_lib.CPU_RETRIEVAL_EFFICIENCY,
  )
  queries_per_second = 256 / (plan.retrieve_hours * 3600)
  assert queries_per_second == pytest.approx(22.7, rel=0.05)
