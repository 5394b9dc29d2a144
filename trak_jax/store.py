"""The encoding store: sharded TFRecords of φ with a manifest.

Layout of a store directory (DESIGN.md section 4):

    encodings-SSSSS-of-NNNNN.tfrecord   one tf.train.Example per example:
                                        id, vector (raw bytes), loss,
                                        num_tokens
    encodings-SSSSS-of-NNNNN.json       that shard's metadata: count, sha256,
                                        fingerprint, rejected ids
    manifest.json                       fingerprint, encoder config, d, dtype,
                                        counts, per-shard checksums
    rejected.jsonl                      id (or location) and reason of every
                                        input not encoded
    COMPLETED                           written last

An example's shard is a stable hash of its id, so a rerun puts every example
where the first run did. A shard is written to a temporary name and renamed,
and its metadata file is written after it: a shard counts as done only when
both exist and agree, so a rerun skips done shards and redoes the rest, with
no duplicate and no missing id. (On GCS a rename is a copy and a delete, not
atomic; the checksum in the metadata is what makes a shard count as done.)

The directory may be local or on any filesystem `tf.io.gfile` knows
(`gs://...`); see `trak_jax.files`.
"""

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from trak_jax import files, tf_import
from trak_jax import fingerprint as fingerprint_lib

MANIFEST = "manifest.json"
REJECTED = "rejected.jsonl"
COMPLETED = files.COMPLETED
PREFIX = "encodings"


class StoreError(ValueError):
  """A store that cannot be used; the message names the file."""


class EncodedRecord(NamedTuple):
  id: str
  vector: np.ndarray  # [d] in the store's dtype
  loss: float  # summed token loss
  num_tokens: int  # tokens with loss weight


class Rejection(NamedTuple):
  id: str | None  # None when the input had no readable id
  reason: str
  location: str | None = None  # file:line, where known

  def to_dict(self) -> dict[str, Any]:
    return {k: v for k, v in self._asdict().items() if v is not None}


@dataclasses.dataclass(frozen=True)
class ShardInfo:
  """Metadata of one written shard."""

  index: int
  num_shards: int
  count: int
  tokens: int
  sha256: str
  fingerprint: dict[str, Any]
  rejected: tuple[dict[str, Any], ...] = ()

  @property
  def file_name(self) -> str:
    return shard_name(self.index, self.num_shards)

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "rejected": list(self.rejected)}


def shard_name(index: int, num_shards: int) -> str:
  return f"{PREFIX}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_of(example_id: str, num_shards: int) -> int:
  """A stable shard for an id (the same on every host and run)."""
  digest = hashlib.sha1(example_id.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % num_shards


def _serialize(record: EncodedRecord, dtype: np.dtype) -> bytes:
  tf = tf_import.tensorflow()

  vector = np.ascontiguousarray(record.vector, dtype=dtype)
  feature = {
    "id": tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[record.id.encode("utf-8")])
    ),
    "vector": tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[vector.tobytes()])
    ),
    "loss": tf.train.Feature(
      float_list=tf.train.FloatList(value=[record.loss])
    ),
    "num_tokens": tf.train.Feature(
      int64_list=tf.train.Int64List(value=[record.num_tokens])
    ),
  }
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  # Deterministic: map fields in a fixed order, so the same records give
  # the same shard bytes (and checksum) in every process.
  return example.SerializeToString(deterministic=True)


def write_shard(
  directory: str,
  *,
  index: int,
  num_shards: int,
  records: Iterable[EncodedRecord],
  rejected: Sequence[Rejection],
  fingerprint: fingerprint_lib.Fingerprint,
) -> ShardInfo:
  """Writes one shard atomically, then its metadata file.

  Records are written in the order given; callers sort them by id.
  """
  tf = tf_import.tensorflow()

  files.makedirs(directory)
  name = shard_name(index, num_shards)
  final = os.path.join(directory, name)
  temporary = files.temporary_name(final)
  dtype = np.dtype(fingerprint.dtype)
  count = tokens = 0
  with tf.io.TFRecordWriter(temporary) as writer:
    for record in records:
      writer.write(_serialize(record, dtype))
      count += 1
      tokens += int(record.num_tokens)
  files.replace(temporary, final)
  info = ShardInfo(
    index=index,
    num_shards=num_shards,
    count=count,
    tokens=tokens,
    sha256=files.sha256(final),
    fingerprint=fingerprint.to_dict(),
    rejected=tuple(r.to_dict() for r in rejected),
  )
  files.write_json(final.replace(".tfrecord", ".json"), info.to_dict())
  return info


def read_shard_info(directory: str, index: int, num_shards: int) -> ShardInfo:
  """A written shard's metadata (its data file is not read).

  Raises:
    StoreError: If the shard's metadata file is missing or unreadable.
  """
  meta = os.path.join(
    directory, shard_name(index, num_shards).replace(".tfrecord", ".json")
  )
  try:
    with files.open(meta) as f:
      values = json.load(f)
  except FileNotFoundError:
    raise StoreError(f"shard metadata {meta} is missing") from None
  except (OSError, json.JSONDecodeError) as error:
    raise StoreError(f"shard metadata {meta} is unreadable: {error}") from None
  return ShardInfo(**{**values, "rejected": tuple(values["rejected"])})


def done_shard(
  directory: str,
  index: int,
  num_shards: int,
  fingerprint: fingerprint_lib.Fingerprint,
) -> ShardInfo | None:
  """The metadata of a finished shard, or None if it must be (re)written.

  Raises:
    fingerprint.FingerprintMismatchError: If the shard was made by another
      encoder.
  """
  data = os.path.join(directory, shard_name(index, num_shards))
  meta = data.replace(".tfrecord", ".json")
  if not (files.exists(data) and files.exists(meta)):
    return None
  info = read_shard_info(directory, index, num_shards)
  fingerprint.check_matches(
    fingerprint_lib.Fingerprint.from_dict(info.fingerprint), what=data
  )
  if files.sha256(data) != info.sha256:
    return None  # Written by a run that died between data and metadata.
  return info


def write_rejected(directory: str, rejected: Iterable[dict[str, Any]]) -> None:
  """Writes `rejected.jsonl`: `Rejection.to_dict()`s sorted by id, then
  location."""
  rejected = sorted(
    rejected, key=lambda r: (r.get("id") or "", r.get("location") or "")
  )
  with files.open(os.path.join(directory, REJECTED), "w") as f:
    for record in rejected:
      f.write(json.dumps(record, sort_keys=True) + "\n")


def finalize(
  directory: str,
  *,
  shards: Sequence[ShardInfo],
  parse_rejected: Sequence[Rejection],
  fingerprint: fingerprint_lib.Fingerprint,
  encoder_config: dict[str, Any],
  num_read: int,
  source: str,
) -> dict[str, Any]:
  """Writes `rejected.jsonl`, `manifest.json` and, last, `COMPLETED`.

  Raises:
    StoreError: If shards are missing or the counts do not add up.
  """
  shards = sorted(shards, key=lambda s: s.index)
  num_shards = shards[0].num_shards if shards else 0
  if [s.index for s in shards] != list(range(num_shards)):
    raise StoreError(f"{directory}: shards missing, have {len(shards)}")
  rejected = [r.to_dict() for r in parse_rejected]
  for shard in shards:
    rejected.extend(shard.rejected)
  encoded = sum(s.count for s in shards)
  if encoded + len(rejected) != num_read:
    raise StoreError(
      f"{directory}: {encoded} encoded + {len(rejected)} rejected != "
      f"{num_read} read"
    )
  write_rejected(directory, rejected)
  manifest = {
    "fingerprint": fingerprint.to_dict(),
    "encoder_config": encoder_config,
    "dim": fingerprint.dim,
    "dtype": fingerprint.dtype,
    "source": source,
    "counts": {
      "read": num_read,
      "encoded": encoded,
      "rejected": len(rejected),
      "tokens": sum(s.tokens for s in shards),
    },
    "shards": [
      {"file": s.file_name, "count": s.count, "sha256": s.sha256}
      for s in shards
    ],
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  files.write_json(os.path.join(directory, MANIFEST), manifest)
  files.write_marker(directory, manifest["created"])
  return manifest


class EncodedBatch(NamedTuple):
  """Stacked records of a store (not `trak_jax.data.Batch`, model input)."""

  ids: list[str]
  vectors: np.ndarray  # [n, d]
  losses: np.ndarray  # [n]
  num_tokens: np.ndarray  # [n]


class EncodingStore:
  """A finished store, opened for reading.

  Args:
    directory: The store directory.
    expected: If given, the store's fingerprint must equal it.
    verify: Check each shard's sha256 against the manifest before reading.

  Raises:
    StoreError: If the store is unfinished or its manifest unreadable.
    fingerprint.FingerprintMismatchError: If `expected` differs.
  """

  def __init__(
    self,
    directory: str,
    *,
    expected: fingerprint_lib.Fingerprint | None = None,
    verify: bool = True,
  ):
    self.directory = directory
    if not files.exists(os.path.join(directory, COMPLETED)):
      raise StoreError(f"{directory}: no {COMPLETED} marker (unfinished run?)")
    try:
      with files.open(os.path.join(directory, MANIFEST)) as f:
        self.manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
      raise StoreError(f"{directory}/{MANIFEST}: unreadable: {error}") from None
    self.fingerprint = fingerprint_lib.Fingerprint.from_dict(
      self.manifest["fingerprint"]
    )
    if expected is not None:
      expected.check_matches(self.fingerprint, what=f"store {directory}")
    self.verify = verify
    self.dtype = np.dtype(self.manifest["dtype"])
    self.dim = int(self.manifest["dim"])

  def __len__(self) -> int:
    return int(self.manifest["counts"]["encoded"])

  @property
  def shard_paths(self) -> list[str]:
    return [
      os.path.join(self.directory, s["file"]) for s in self.manifest["shards"]
    ]

  def _records(self, shard: dict[str, Any]) -> Iterator[bytes]:
    tf = tf_import.tensorflow()

    path = os.path.join(self.directory, shard["file"])
    if not files.exists(path):
      raise StoreError(f"shard {path} is missing")
    if self.verify and files.sha256(path) != shard["sha256"]:
      raise StoreError(f"shard {path} is corrupted: checksum mismatch")
    count = 0
    try:
      for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        count += 1
        yield raw
    except tf.errors.OpError as error:
      raise StoreError(
        f"shard {path} is truncated or corrupted: {error.message}"
      ) from None
    if count != shard["count"]:
      raise StoreError(
        f"shard {path} has {count} records, manifest says {shard['count']}"
      )

  def _parse(self, raw: bytes) -> EncodedRecord:
    tf = tf_import.tensorflow()

    feature = tf.train.Example.FromString(raw).features.feature
    return EncodedRecord(
      id=feature["id"].bytes_list.value[0].decode("utf-8"),
      vector=np.frombuffer(feature["vector"].bytes_list.value[0], self.dtype),
      loss=feature["loss"].float_list.value[0],
      num_tokens=int(feature["num_tokens"].int64_list.value[0]),
    )

  @property
  def num_shards(self) -> int:
    return len(self.manifest["shards"])

  def shard_records(self, index: int) -> Iterator[EncodedRecord]:
    """The records of one shard.

    Raises:
      StoreError: Naming the shard, if it is missing, truncated or corrupt.
    """
    for raw in self._records(self.manifest["shards"][index]):
      yield self._parse(raw)

  def records(self) -> Iterator[EncodedRecord]:
    """Every record, shard by shard."""
    for index in range(self.num_shards):
      yield from self.shard_records(index)

  def batches(self, batch_size: int) -> Iterator[EncodedBatch]:
    """Records in batches of `batch_size` (the last may be smaller)."""
    chunk: list[EncodedRecord] = []
    for record in self.records():
      chunk.append(record)
      if len(chunk) == batch_size:
        yield _stack(chunk)
        chunk = []
    if chunk:
      yield _stack(chunk)

  def load(self) -> EncodedBatch:
    """The whole store in memory (for indexes and small stores)."""
    return _stack(list(self.records()))


def _stack(records: Sequence[EncodedRecord]) -> EncodedBatch:
  return EncodedBatch(
    ids=[r.id for r in records],
    vectors=np.stack([r.vector for r in records]),
    losses=np.asarray([r.loss for r in records], np.float32),
    num_tokens=np.asarray([r.num_tokens for r in records], np.int64),
  )
