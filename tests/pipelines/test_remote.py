"""The jobs read and write a remote filesystem as they do local disk.

ram://, TensorFlow's in-memory filesystem, stands for gs:// (the launcher's
`--output_dir=gs://BUCKET/RUN/<stage>`): the corpus, the queries and every
job's output live there; only the checkpoint stays local. The DirectRunner
runs in this process, so its workers see the same ram://.
"""

import json
import uuid

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import encode_lib, hessian_lib, index_lib, retrieve_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import index as index_core
from trak_jax import projection as projection_lib
from trak_jax import report as report_lib
from trak_jax import store as store_lib

CONFIG = encoder_lib.preset(
  "trackstar", projection=projection_lib.ProjectionSpec(dim=128)
)


def encode(corpus: str, checkpoint: str, output_dir: str) -> None:
  encode_lib.run_pipeline(
    TestPipeline(),
    options=encode_lib.EncodeOptions(
      corpus=corpus,
      checkpoint=checkpoint,
      output_dir=output_dir,
      encoder_config=CONFIG,
      num_shards=3,
      batch_size=16,
    ),
  )


@pytest.fixture(scope="module")
def remote(tiny_run, tmp_path_factory):
  """Every stage run on ram://, and the encode job run locally too."""
  root = f"ram://test-remote-{uuid.uuid4().hex}"
  files.makedirs(f"{root}/data")
  for name in ("corpus", "queries"):
    files.write_bytes(
      f"{root}/data/{name}.jsonl", files.read_bytes(tiny_run[name])
    )
  local_store = str(tmp_path_factory.mktemp("remote") / "store")
  encode(tiny_run["corpus"], tiny_run["checkpoint"], local_store)
  encode(f"{root}/data/corpus.jsonl", tiny_run["checkpoint"], f"{root}/store")
  hessian = hessian_lib.run_pipeline(
    TestPipeline(),
    options=hessian_lib.HessianOptions(
      store_dir=f"{root}/store",
      queries=f"{root}/data/queries.jsonl",
      checkpoint=tiny_run["checkpoint"],
      output_dir=f"{root}/hessian",
      encoder_config=CONFIG,
      batch_size=16,
    ),
  )
  index = index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=f"{root}/store",
      hessian_dir=f"{root}/hessian",
      output_dir=f"{root}/index",
      encoder_config=CONFIG,
    ),
  )
  return {
    "root": root,
    "local_store": local_store,
    "hessian": hessian,
    "index": index,
  }


def test_a_remote_store_equals_a_local_one(remote):
  local = store_lib.EncodingStore(remote["local_store"])
  store = store_lib.EncodingStore(f"{remote['root']}/store")
  a, b = local.load(), store.load()
  assert a.ids == b.ids and len(a.ids) > 0
  np.testing.assert_array_equal(a.vectors, b.vectors)
  shards = lambda s: [
    (x["file"], x["count"], x["sha256"]) for x in s.manifest["shards"]
  ]
  assert shards(store) == shards(local)  # Byte-identical shard files.
  assert store.manifest["counts"] == local.manifest["counts"]
  assert store.manifest["source"] == f"{remote['root']}/data/corpus.jsonl"
  for name in (store_lib.REJECTED, store_lib.COMPLETED):
    assert files.exists(f"{remote['root']}/store/{name}")


def test_a_remote_rerun_skips_done_shards(remote, tiny_run, monkeypatch):
  def must_not_write(*args, **kwargs):
    raise AssertionError("a done shard was rewritten")

  monkeypatch.setattr(store_lib, "write_shard", must_not_write)
  encode(
    f"{remote['root']}/data/corpus.jsonl",
    tiny_run["checkpoint"],
    f"{remote['root']}/store",
  )


def test_remote_hessian_and_index_jobs_write_loadable_outputs(remote):
  root = remote["root"]
  assert remote["hessian"]["train_examples"] == len(
    store_lib.EncodingStore(f"{root}/store")
  )
  assert files.exists(f"{root}/hessian/hessian.npz")
  for job in ("hessian", "index"):
    assert files.exists(f"{root}/{job}/{files.COMPLETED}")
  index = index_core.Index.load(f"{root}/index")
  assert index.kind == "scann" and len(index.ids) == len(
    store_lib.EncodingStore(f"{root}/store")
  )
  assert remote["index"]["recall_at_10"]["recall"] >= 0.9
  found = index.search(index.vectors[:5], k=3)
  np.testing.assert_allclose(found.scores[:, 0], 1.0, atol=1e-3)  # Itself.


def test_the_remote_retrieve_job_writes_its_report(remote, tiny_run):
  root = remote["root"]
  summary = retrieve_lib.run_pipeline(
    TestPipeline(),
    options=retrieve_lib.RetrieveOptions(
      queries=f"{root}/data/queries.jsonl",
      checkpoint=tiny_run["checkpoint"],
      corpus=f"{root}/data/corpus.jsonl",
      indexes=(("trackstar", f"{root}/index"),),
      output_dir=f"{root}/report",
      batch_size=16,
    ),
  )
  records = report_lib.read_report_jsonl(f"{root}/report/report.jsonl")
  queries = [json.loads(line) for line in open(tiny_run["queries"])]
  assert [r["query_id"] for r in records] == sorted(q["id"] for q in queries)
  with files.open(f"{root}/report/metrics.json") as f:
    assert json.load(f) == summary
  assert files.exists(f"{root}/report/report.html")


def test_a_damaged_remote_shard_is_named(remote):
  # A copy, so that the other tests keep an intact store.
  store_dir = f"{remote['root']}/damaged"
  files.copy_tree(f"{remote['root']}/store", store_dir)
  shard = f"{store_dir}/{store_lib.shard_name(1, 3)}"
  data = files.read_bytes(shard)
  files.write_bytes(shard, data[: len(data) // 2])
  for verify in (True, False):
    store = store_lib.EncodingStore(store_dir, verify=verify)
    with pytest.raises(store_lib.StoreError, match=shard):
      list(store.records())
