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
  queries = 1000 * 1024 * 4 + 1000 * 8192 * 4
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
