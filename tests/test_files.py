"""Local and remote files: ram:// (TF's in-memory filesystem) stands for gs://.

Each test writes under its own ram:// root; ram:// lives as long as the
process, like a bucket.
"""

import json
import os
import uuid

import gin
import numpy as np
import pytest
import tensorflow as tf

from trak_jax import encoder as encoder_lib
from trak_jax import files, gin_utils
from trak_jax import hessian as hessian_core
from trak_jax import index as index_core
from trak_jax import store as store_lib


@pytest.fixture
def remote():
  """A fresh remote directory."""
  return f"ram://test-files-{uuid.uuid4().hex}"


@pytest.fixture(params=["local", "remote"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path)
  return f"ram://test-files-{uuid.uuid4().hex}"


def test_is_local_and_abspath():
  assert files.is_local("a/b") and files.is_local("/a/b")
  assert not files.is_local("gs://bucket/a") and not files.is_local("ram://x")
  assert files.abspath("gs://bucket/run") == "gs://bucket/run"
  assert files.abspath("a") == os.path.abspath("a")


def test_text_bytes_exists_replace_and_glob(root):
  directory = os.path.join(root, "d", "e")
  assert not files.exists(directory)
  files.makedirs(directory)
  files.makedirs(directory)  # Exists already: no error.
  text = os.path.join(directory, "a.txt")
  with files.open(text, "w", encoding="utf-8") as f:
    f.write("héllo\n")
    f.writelines(["two\n", "three\n"])
  with files.open(text, encoding="utf-8") as f:
    assert list(f) == ["héllo\n", "two\n", "three\n"]
  with files.open(text, "a") as f:
    f.write("four\n")
  with files.open(text, "rb") as f:
    assert f.read() == "héllo\ntwo\nthree\nfour\n".encode()
  files.write_bytes(os.path.join(directory, "b.bin"), b"\x00\xff")
  files.replace(os.path.join(directory, "b.bin"), text)  # Overwrites.
  assert files.read_bytes(text) == b"\x00\xff"
  assert not files.exists(os.path.join(directory, "b.bin"))
  with files.open(os.path.join(directory, "c.txt"), "w"):
    pass  # Written empty: exists all the same.
  assert files.read_bytes(os.path.join(directory, "c.txt")) == b""
  assert files.glob(os.path.join(directory, "*.txt")) == [
    os.path.join(directory, "a.txt"),
    os.path.join(directory, "c.txt"),
  ]
  assert files.glob(os.path.join(directory, "*.json")) == []


def test_remove_deletes_a_file_and_ignores_a_missing_one(root):
  path = os.path.join(root, "marker")
  files.makedirs(root)
  files.write_bytes(path, b"done\n")
  files.remove(path)
  assert not files.exists(path)
  files.remove(path)  # Missing: no error.


def test_a_missing_remote_file_raises_python_errors(remote):
  missing = f"{remote}/missing.json"
  with pytest.raises(FileNotFoundError, match="missing.json"):
    with files.open(missing) as f:
      f.read()
  with pytest.raises(FileNotFoundError):
    files.replace(missing, f"{remote}/other.json")


def test_numpy_arrays_round_trip(root):
  files.makedirs(root)
  array = np.arange(12, dtype=np.float32).reshape(3, 4)
  files.save_npy(os.path.join(root, "a.npy"), array)
  np.testing.assert_array_equal(
    files.load_npy(os.path.join(root, "a.npy")), array
  )
  files.save_npz(os.path.join(root, "b.npz"), x=array, y=np.ones(2))
  with files.load_npz(os.path.join(root, "b.npz")) as arrays:
    assert sorted(arrays.files) == ["x", "y"]
    np.testing.assert_array_equal(arrays["x"], array)


def test_directories_are_staged_locally(tmp_path, remote):
  target = f"{remote}/tree"
  with files.local_directory_to_write(target) as local:
    assert files.is_local(local)
    os.makedirs(os.path.join(local, "sub"))
    files.write_bytes(os.path.join(local, "top.bin"), b"1")
    files.write_bytes(os.path.join(local, "sub", "inner.bin"), b"2")
  assert not os.path.exists(local)  # The staging directory is gone.
  assert files.read_bytes(f"{target}/sub/inner.bin") == b"2"
  with files.local_directory_to_read(target) as local:
    assert files.read_bytes(os.path.join(local, "top.bin")) == b"1"
    assert files.read_bytes(os.path.join(local, "sub", "inner.bin")) == b"2"
  assert not os.path.exists(local)
  here = str(tmp_path / "here")
  with files.local_directory_to_write(here) as local:
    assert local == here and os.path.isdir(here)
  with files.local_directory_to_read(here) as local:
    assert local == here


def test_hessian_round_trips_through_a_remote_directory(tmp_path, remote):
  rng = np.random.default_rng(3)
  stats = hessian_core.Autocorrelation([2, 3])
  stats.update(rng.normal(size=(40, 5)))
  spec = hessian_core.HessianSpec(kind="train", block_diagonal=True)
  fitted = hessian_core.fit(spec, stats)
  for directory in (str(tmp_path), f"{remote}/hessian"):
    hessian_core.save(
      directory,
      fitted,
      train_stats=stats,
      eval_stats=stats,
      spec=spec,
      fingerprint={"dim": 5},
    )
  local, local_info = hessian_core.load(str(tmp_path))
  loaded, info = hessian_core.load(f"{remote}/hessian")
  assert info == local_info and info["block_sizes"] == [2, 3]
  for a, b in zip(loaded.blocks, fitted.preconditioner.blocks, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(FileNotFoundError, match="no fitted Hessian"):
    hessian_core.load(f"{remote}/nothing")
  # hessian.json and the marker are renamed into place: no temporary left.
  assert files.listdir(f"{remote}/hessian") == [
    files.COMPLETED,
    "hessian.json",
    "hessian.npz",
  ]
  files.remove(f"{remote}/hessian/{files.COMPLETED}")
  with pytest.raises(files.UnfinishedError) as raised:
    hessian_core.load(f"{remote}/hessian")
  assert f"{remote}/hessian:" in str(raised.value)
  assert "hessian job did not finish" in str(raised.value)


@pytest.mark.parametrize("kind", ["exact", "scann"])
def test_index_round_trips_through_a_remote_directory(kind, remote):
  rng = np.random.default_rng(1)
  vectors = rng.normal(size=(300, 16)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  ids = [f"e{i}" for i in range(300)]
  built = index_core.Index.build(
    ids=ids,
    vectors=vectors,
    kind=kind,
    spec=index_core.ScannSpec(),
    info={"note": "remote"},
  )
  directory = f"{remote}/index"
  built.save(directory)
  if kind == "scann":
    # Asset paths are relative, so the searcher loads from any copy.
    with files.open(f"{directory}/scann/scann_assets.pbtxt") as f:
      assets = f.read()
    assert "asset_path" in assets and "/tmp" not in assets
  loaded = index_core.Index.load(directory)
  assert loaded.kind == kind and loaded.ids == ids
  assert loaded.info == json.loads(json.dumps(built.info))
  np.testing.assert_array_equal(loaded.vectors, vectors)
  queries = vectors[:20] + 0.01 * rng.normal(size=(20, 16))
  expected, found = built.search(queries, k=5), loaded.search(queries, k=5)
  assert found.ids == expected.ids
  np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-6)
  with pytest.raises(FileNotFoundError, match="no index"):
    index_core.Index.load(f"{remote}/nothing")
  files.remove(f"{directory}/{files.COMPLETED}")
  with pytest.raises(files.UnfinishedError, match="index job did not finish"):
    index_core.Index.load(directory)
  built.save(directory)  # A rerun: finished again.
  assert index_core.load_info(directory) == loaded.info


FINGERPRINT = encoder_lib.Fingerprint(
  checkpoint_digest="abc",
  correction="{}",
  projection="{}",
  seed=0,
  dim=4,
  dtype="float32",
)


def write_store(directory: str, num_shards: int = 2) -> list[str]:
  ids = [f"x{i}" for i in range(10)]
  shards = []
  for index in range(num_shards):
    records = [
      store_lib.EncodedRecord(i, np.full(4, n, np.float32), float(n), n)
      for n, i in enumerate(ids)
      if store_lib.shard_of(i, num_shards) == index
    ]
    shards.append(
      store_lib.write_shard(
        directory,
        index=index,
        num_shards=num_shards,
        records=records,
        rejected=[],
        fingerprint=FINGERPRINT,
      )
    )
  store_lib.finalize(
    directory,
    shards=shards,
    parse_rejected=[],
    fingerprint=FINGERPRINT,
    encoder_config={},
    num_read=len(ids),
    source="test",
  )
  return ids


def test_a_store_written_remotely_reads_back_like_a_local_one(tmp_path, remote):
  directory = f"{remote}/store"
  ids = write_store(directory)
  write_store(str(tmp_path))
  store, local = (
    store_lib.EncodingStore(directory),
    store_lib.EncodingStore(str(tmp_path)),
  )
  assert sorted(store.load().ids) == ids
  assert store.manifest["shards"] == local.manifest["shards"]
  assert tf.io.gfile.listdir(directory) == sorted(os.listdir(tmp_path))
  info = store_lib.done_shard(directory, 1, 2, FINGERPRINT)
  assert info == store_lib.read_shard_info(directory, 1, 2)
  with pytest.raises(store_lib.StoreError, match="shard metadata .* missing"):
    store_lib.read_shard_info(directory, 0, 3)


def test_an_unfinished_remote_store_is_refused(remote):
  directory = f"{remote}/store"
  write_store(directory)
  tf.io.gfile.remove(f"{directory}/{store_lib.COMPLETED}")
  with pytest.raises(store_lib.StoreError, match="no COMPLETED"):
    store_lib.EncodingStore(directory)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_remote_shard_is_named(remote, damage):
  directory = f"{remote}/store"
  write_store(directory)
  shard = f"{directory}/{store_lib.shard_name(1, 2)}"
  data = bytearray(files.read_bytes(shard))
  if damage == "truncate":
    data = data[: len(data) // 2]
  else:
    data[len(data) // 2] ^= 0xFF
  files.write_bytes(shard, bytes(data))
  if damage == "delete":
    tf.io.gfile.remove(shard)
  for verify in (True, False):
    store = store_lib.EncodingStore(directory, verify=verify)
    with pytest.raises(store_lib.StoreError, match=shard):
      list(store.records())
  # A rerun redoes the damaged shard rather than trusting it.
  assert store_lib.done_shard(directory, 1, 2, FINGERPRINT) is None


def test_the_operative_config_is_written_remotely(remote):
  gin.clear_config()
  written = gin_utils.write_operative_config(f"{remote}/run")
  assert written == f"{remote}/run/config.gin"
  with files.open(written) as f:
    assert f.read() == gin.operative_config_str()
