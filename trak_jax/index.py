"""Retrieval indexes over finished encodings: ScaNN or exact.

An index directory holds:

    ids.json          the encoded example ids, in row order
    vectors.npy       the finished encodings Ḡ [n, d] float32 (exact search,
                      recall measurement)
    scann/            ScaNN's serialized searcher (kind "scann")
    index.json        kind, ScaNN settings, the store's fingerprint, the
                      Hessian it was built with (its directory, what its
                      hessian.json records of the fit, and the digest of
                      R^(-1/2)), and measured Recall@10 against exact search

or, for a sharded exact index (index.json's `layout` is "sharded"; what the
index job writes for kind "exact"), one file per store shard instead of
ids.json and vectors.npy:

    shard-SSSSS-of-NNNNN.npz  `ids` [n] (sorted) and `vectors` [n, d], the
                              finished encodings in index.json's `dtype`
                              (bfloat16 as its uint16 bits; int8 as codes,
                              with `scales` [n] float32: row i is
                              vectors[i] * scales[i], see `Int8Rows`)
    index.json                as above, plus `dtype`, `dim` and `shards`
                              (file, count and sha256 of each)

Either way index.json is written to a temporary name and renamed, and then,
last, a `COMPLETED` marker (`files.COMPLETED`); an index without it is
refused (`load_info`). A rerun removes the marker before it writes.

A sharded index is searched shard by shard (`search_shard`, then
`merge_top_k`), so no process holds more than one shard; `Index.load` reads
every shard, for callers that want the whole index in memory.

Queries must be finished with the same R^(-1/2) as the index: `load_hessian`
reloads the Hessian an index names and refuses one refitted since.

ScaNN: a partitioning tree, asymmetric hashing, and exact re-ordering of the
best candidates; scores are dot products (cosines, after normalisation).
"""

import concurrent.futures
import dataclasses
import heapq
import itertools
import json
import os
import time
import zipfile
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from trak_jax import encoder as encoder_lib
from trak_jax import files, scoring
from trak_jax import hessian as hessian_core

INFO = "index.json"
SHARDED = "sharded"  # index.json's `layout` of a sharded exact index
SHARD_PREFIX = "shard"


@dataclasses.dataclass(frozen=True)
class ScannSpec:
  """ScaNN settings (see ScaNN's builder).

  Attributes:
    num_leaves: Partitions of the tree (None: no tree; see `_tree_settings`).
    num_leaves_to_search: Partitions searched per query (None: a fifth of
      the leaves, or enough to expect `reorder_k` candidates).
    training_sample_size: Points used to train the tree (None: all, up to
      100,000).
    dims_per_block: Dimensions per asymmetric-hashing block.
    anisotropic_quantization_threshold: ScaNN's anisotropic loss threshold.
    reorder_k: Candidates re-scored exactly.
    scorer: "ah" (asymmetric hashing) or "brute_force_int8" (every row
      scored with int8-quantised vectors, `score_brute_force(quantize=True)`),
      either followed by exact re-ordering of `reorder_k` candidates.
  """

  num_leaves: int | None = None
  num_leaves_to_search: int | None = None
  training_sample_size: int | None = None
  dims_per_block: int = 2
  anisotropic_quantization_threshold: float = 0.2
  reorder_k: int = 300
  scorer: str = "ah"

  def __post_init__(self):
    if self.scorer not in SCORERS:
      raise ValueError(
        f"ScaNN scorer {self.scorer!r} is not one of {', '.join(SCORERS)}"
      )


SCORERS = ("ah", "brute_force_int8")  # ScannSpec.scorer


class HessianMismatchError(encoder_lib.FingerprintMismatchError):
  """An index and the Hessian directory it names no longer agree."""


def _hessian_json_digest(hessian_info: dict, digest: str, hessian_dir: str):
  """Checks hessian.json's digest against that of the R^(-1/2) it sits by."""
  recorded = hessian_info.get("preconditioner_digest")
  if recorded is None:
    raise HessianMismatchError(
      f"{hessian_core.HESSIAN_INFO} in {hessian_dir} records no "
      "preconditioner_digest (fitted before digests were recorded); refit "
      "the Hessian, then rebuild the indexes made from it"
    )
  if recorded != digest:
    raise HessianMismatchError(
      f"{hessian_core.HESSIAN_INFO} in {hessian_dir} records preconditioner "
      f"digest {recorded}, but its {hessian_core.HESSIAN_ARRAYS} holds an "
      f"R^(-1/2) with digest {digest} (partly overwritten?); refit the Hessian"
    )


def hessian_record(
  preconditioner: hessian_core.Preconditioner,
  hessian_info: dict,
  *,
  hessian_dir: str,
) -> dict:
  """What index.json records of the Hessian an index is finished with.

  Args:
    preconditioner: R^(-1/2) as loaded from `hessian_dir`.
    hessian_info: Its hessian.json.
    hessian_dir: Where both were loaded from (for errors).

  Returns:
    hessian.json's record of the fit (spec, λ `mix`, `eigen_k`, block sizes,
    sample counts, `preconditioner_digest`), without its fingerprint (the
    index records the store's, which the Hessian's matched).

  Raises:
    HessianMismatchError: If hessian.json records no digest, or one that
      is not the digest of `preconditioner`.
  """
  digest = hessian_core.preconditioner_digest(preconditioner)
  _hessian_json_digest(hessian_info, digest, hessian_dir)
  return {k: v for k, v in hessian_info.items() if k != "fingerprint"}


def load_hessian(
  info: dict[str, Any], *, index_dir: str
) -> hessian_core.Preconditioner:
  """Reloads the R^(-1/2) an index was finished with, to finish queries.

  Args:
    info: The index's index.json.
    index_dir: The index's directory (for errors).

  Raises:
    HessianMismatchError: If the index records no Hessian digest, or the
      Hessian in its `hessian_dir` was refitted (or partly overwritten)
      after the index was built.
    FileNotFoundError: If that directory holds no fitted Hessian.
  """
  hessian_dir = info.get("hessian_dir")
  if not hessian_dir:
    raise HessianMismatchError(f"index {index_dir} names no Hessian directory")
  recorded = (info.get("hessian") or {}).get("preconditioner_digest")
  if recorded is None:
    raise HessianMismatchError(
      f"index {index_dir} records no digest of the Hessian in {hessian_dir} "
      "(built before digests were recorded); rebuild the index"
    )
  preconditioner, hessian_info = hessian_core.load(hessian_dir)
  digest = hessian_core.preconditioner_digest(preconditioner)
  _hessian_json_digest(hessian_info, digest, hessian_dir)
  if digest != recorded:
    raise HessianMismatchError(
      f"the Hessian in {hessian_dir} was refitted after index {index_dir} "
      f"was built: the index records preconditioner digest {recorded}, the "
      f"Hessian's is now {digest}; rebuild the index"
    )
  return preconditioner


class Neighbors(NamedTuple):
  ids: list[list[str]]  # [queries][k] example ids, best first
  scores: np.ndarray  # [queries, k] float32


def _tree_settings(spec: ScannSpec, n: int) -> tuple[int, int, int]:
  # Finished encodings are whitened and normalised: nearly isotropic, so a
  # partitioning tree prunes badly (bench/retrieval.py: a sqrt(n)-leaf tree
  # searched a fifth at a time found 38% of the exact top-10 on 200k
  # encodings). No tree unless asked for (asymmetric hashing and exact
  # re-ordering only); a tree searches a fifth of its leaves, or enough to
  # expect `reorder_k` candidates.
  if spec.num_leaves is None or spec.num_leaves <= 1:
    return 1, 1, n
  leaves = spec.num_leaves
  enough = int(np.ceil(leaves * spec.reorder_k / max(n, 1)))
  search = spec.num_leaves_to_search or max(1, leaves // 5, enough)
  sample = spec.training_sample_size or min(n, 100_000)
  return leaves, min(search, leaves), min(sample, n)


def build_scann(vectors: np.ndarray, spec: ScannSpec, *, k: int = 10):
  """A ScaNN searcher over `vectors` ([n, d] float32), dot-product scores."""
  import scann

  leaves, search, sample = _tree_settings(spec, len(vectors))
  builder = scann.scann_ops_pybind.builder(vectors, k, "dot_product")
  if leaves > 1:
    builder = builder.tree(
      num_leaves=leaves,
      num_leaves_to_search=search,
      training_sample_size=sample,
    )
  if spec.scorer == "brute_force_int8":
    builder = builder.score_brute_force(quantize=True)
  else:
    builder = builder.score_ah(
      spec.dims_per_block,
      anisotropic_quantization_threshold=spec.anisotropic_quantization_threshold,
    )
  return builder.reorder(spec.reorder_k).build()


def recall_against_exact(approximate: np.ndarray, exact: np.ndarray) -> float:
  """Mean share of the exact top-k found by the approximate top-k."""
  found = [
    len(set(a.tolist()) & set(e.tolist())) / len(e)
    for a, e in zip(approximate, exact, strict=True)
  ]
  return float(np.mean(found))


def sample_rows(n: int, sample: int, *, seed: int) -> np.ndarray:
  """[min(sample, n)] distinct rows of n, sorted: the encodings an index
  queries itself with to measure a recall."""
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(n, min(sample, n), replace=False))


def scann_record(spec: ScannSpec, n: int) -> dict[str, Any]:
  """index.json's record of a ScaNN searcher over n rows: `spec` with the
  tree settings it resolves to (`_tree_settings`)."""
  leaves, search, sample = _tree_settings(spec, n)
  return {
    **dataclasses.asdict(spec),
    "num_leaves": leaves,
    "num_leaves_to_search": search,
    "training_sample_size": sample,
  }


def recall_of_dtype(
  vectors: np.ndarray, stored, *, k: int = 10, sample: int = 100, seed: int = 0
) -> float | None:
  """Recall@k of exact search over `stored` (the rows in an index dtype)
  against exact search over the float32 `vectors` they were made from.

  The queries are up to `sample` of the rows themselves, each one's own row
  left out of both lists; None when there are too few rows (<= k).
  """
  vectors = np.asarray(vectors, np.float32)
  if len(vectors) <= k:
    return None
  rows = sample_rows(len(vectors), sample, seed=seed)
  queries = vectors[rows]
  exact = scoring.top_k(queries, vectors, k=k + 1).indices
  found = scoring.top_k(queries, stored, k=k + 1).indices
  return recall_against_exact(
    _without_own_rows(found, rows, k), _without_own_rows(exact, rows, k)
  )


def _without_own_rows(rows: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
  """The first k rows of each list that are not the query's own row."""
  return np.stack(
    [row[row != mine][:k] for row, mine in zip(rows, own, strict=True)]
  )


class IndexShardError(ValueError):
  """An index shard that cannot be used; the message names the file."""


class IndexShard(NamedTuple):
  ids: list[str]  # [n] example ids, sorted
  vectors: Any  # [n, d] finished encodings: float32, bfloat16 or Int8Rows


# A partial or merged top-k of one query: (example id, score) pairs, best
# first; equal scores are ordered by id.
Ranked = list[tuple[str, float]]


def shard_file_name(index: int, num_shards: int) -> str:
  return f"{SHARD_PREFIX}-{index:05d}-of-{num_shards:05d}.npz"


DTYPES = ("float32", "bfloat16", "int8")  # an index shard's `dtype`
INT8_MAX = 127


class Int8Rows:
  """Finished encodings quantised to int8 with one float32 scale per row.

  Row i is `codes[i] * scales[i]`, with `scales[i] = max|x_i| / 127`: each
  number is off by at most `scales[i] / 2` (`quantize_int8`). Rows slice to
  dequantised float32 (what `scoring.top_k` reads a chunk at a time), so a
  shard stays 1 byte per number in memory.

  Args:
    codes: [n, d] int8.
    scales: [n] float32.
  """

  def __init__(self, codes: np.ndarray, scales: np.ndarray):
    self.codes = np.asarray(codes, np.int8)
    self.scales = np.asarray(scales, np.float32)
    if self.codes.ndim != 2 or self.scales.shape != self.codes.shape[:1]:
      raise ValueError(
        f"int8 rows need codes [n, d] and scales [n], got "
        f"{self.codes.shape} and {self.scales.shape}"
      )

  @property
  def shape(self) -> tuple[int, int]:
    return self.codes.shape

  @property
  def dtype(self) -> np.dtype:
    return self.codes.dtype

  def __len__(self) -> int:
    return len(self.codes)

  def __getitem__(self, rows) -> np.ndarray:
    # [rows, d] int8 * [rows, 1] -> [rows, d] float32
    return self.codes[rows].astype(np.float32) * self.scales[rows, None]

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    del copy  # A new array either way.
    return self[:].astype(dtype or np.float32, copy=False)


def quantize_int8(vectors: np.ndarray) -> Int8Rows:
  """[n, d] -> int8 codes and per-row scales (`Int8Rows`); zero rows get
  scale 0 and codes 0."""
  vectors = np.asarray(vectors, np.float32)
  peak = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(len(vectors))
  scales = (peak / INT8_MAX).astype(np.float32)
  safe = np.where(scales > 0, scales, 1.0)[:, None]
  codes = np.clip(np.rint(vectors / safe), -INT8_MAX, INT8_MAX)
  return Int8Rows(codes.astype(np.int8), scales)


def check_dtype(dtype: str) -> None:
  """Raises ValueError unless `dtype` is one of `DTYPES`."""
  if dtype not in DTYPES:
    raise ValueError(f"index dtype {dtype!r} is not one of {', '.join(DTYPES)}")


def in_dtype(vectors: np.ndarray, dtype: str):
  """[n, d] finished encodings as an index holds them in `dtype`: an array
  (float32, bfloat16) or `Int8Rows` (int8)."""
  check_dtype(dtype)
  if dtype == "int8":
    return vectors if isinstance(vectors, Int8Rows) else quantize_int8(vectors)
  return np.asarray(vectors).astype(np.dtype(dtype))


def memory_dtype(dtype: str) -> np.dtype:
  """The dtype rows of an index in `dtype` are placed on devices in:
  int8 rows are dequantised to bfloat16 (their codes need 8 of its bits)."""
  check_dtype(dtype)
  return np.dtype("bfloat16" if dtype == "int8" else dtype)


def _to_file(vectors, dtype: str) -> dict[str, np.ndarray]:
  # NumPy's .npy format has no bfloat16: store its bits.
  vectors = in_dtype(vectors, dtype)
  if dtype == "int8":
    return {"vectors": vectors.codes, "scales": vectors.scales}
  if dtype == "bfloat16":
    return {"vectors": vectors.view(np.uint16)}
  return {"vectors": vectors}


_NPY_HEADERS = {
  (1, 0): np.lib.format.read_array_header_1_0,
  (2, 0): np.lib.format.read_array_header_2_0,
}


def _read_aligned(arrays, name: str) -> np.ndarray:
  """Array `name` of an open .npz read straight into a buffer at a
  `scoring.ALIGNMENT`-byte address, so the device aliases it, not copies."""
  with arrays.zip.open(f"{name}.npy") as f:
    header = _NPY_HEADERS.get(np.lib.format.read_magic(f))
    shape, fortran_order, dtype = header(f) if header else ((), True, None)
    if fortran_order or dtype is None or dtype.hasobject:
      return scoring.aligned(arrays[name])  # Not as written here: copy.
    array = scoring.aligned_empty(shape, dtype)
    view = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < array.nbytes:
      read = f.readinto(view[done : done + (1 << 22)])
      if not read:
        raise ValueError(
          f"{name}.npy ends after {done} of {array.nbytes} bytes"
        )
      done += read
  return array


def _from_file(arrays, dtype: str):
  vectors = _read_aligned(arrays, "vectors")
  if dtype == "int8":
    return Int8Rows(vectors, arrays["scales"])
  if dtype == "bfloat16":
    return vectors.view(np.dtype("bfloat16"))
  return vectors.astype(np.dtype(dtype), copy=False)


def in_id_order(
  ids: Sequence[str], vectors: np.ndarray, *, dtype: str
) -> IndexShard:
  """An index shard in memory, as `write_shard` writes and `read_shard`
  reads it: rows sorted by id, vectors ([n, d]) in `dtype`."""
  order = sorted(range(len(ids)), key=ids.__getitem__)
  vectors = in_dtype(np.asarray(vectors)[order], dtype)
  return IndexShard(ids=[ids[i] for i in order], vectors=vectors)


def write_shard(
  directory: str,
  *,
  index: int,
  num_shards: int,
  ids: Sequence[str],
  vectors: np.ndarray,
  dtype: str,
) -> dict[str, Any]:
  """Writes one index shard atomically (temporary name, then rename).

  Rows are written sorted by id, so that exact top-k, which keeps the lower
  row of equal scores, breaks ties by id in every shard as in one index.

  Args:
    directory: The index directory.
    index: The shard's number (that of the store shard it finishes).
    num_shards: Shards in the index.
    ids: [n] example ids.
    vectors: [n, d] finished encodings.
    dtype: "float32", "bfloat16" or "int8" (`Int8Rows`: codes and per-row
      scales), the dtype written.

  Returns:
    The shard's entry in index.json: file name, count and sha256.
  """
  shard = in_id_order(ids, vectors, dtype=dtype)
  name = shard_file_name(index, num_shards)
  final = os.path.join(directory, name)
  temporary = files.temporary_name(final)
  files.makedirs(directory)
  files.save_npz(
    temporary,
    ids=np.asarray(shard.ids, dtype=str),
    **_to_file(shard.vectors, dtype),
  )
  files.replace(temporary, final)
  return {"file": name, "count": len(ids), "sha256": files.sha256(final)}


def read_shard(
  directory: str, info: dict[str, Any], index: int, *, verify: bool = True
) -> IndexShard:
  """One shard of a sharded index.

  Args:
    directory: The index directory.
    info: Its index.json.
    index: The shard's number.
    verify: Check the file's sha256 against index.json first.

  Raises:
    IndexShardError: Naming the shard file, if it is missing, corrupted
      (checksum mismatch), unreadable, or holds another count of rows.
  """
  entry = info["shards"][index]
  path = os.path.join(directory, entry["file"])
  if not files.exists(path):
    raise IndexShardError(f"index shard {path} is missing")
  # The checksum is computed while the arrays load; a mismatch is reported
  # before anything the load found.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    digest = pool.submit(files.sha256, path) if verify else None
    try:
      with files.load_npz(path) as arrays:
        ids = [str(i) for i in arrays["ids"].tolist()]
        vectors = _from_file(arrays, info["dtype"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
      unreadable = f"index shard {path} is unreadable: {error}"
    else:
      unreadable = None
    if digest is not None and (actual := digest.result()) != entry["sha256"]:
      raise IndexShardError(
        f"index shard {path} is corrupted: its sha256 is {actual}, {INFO} "
        f"records {entry['sha256']}; rebuild the index"
      )
  if unreadable:
    raise IndexShardError(unreadable)
  if len(ids) != entry["count"] or vectors.shape != (len(ids), info["dim"]):
    raise IndexShardError(
      f"index shard {path} holds {len(ids)} ids and vectors of shape "
      f"{vectors.shape}; {INFO} records {entry['count']} of d={info['dim']}"
    )
  return IndexShard(ids=ids, vectors=vectors)


SCANN_SHARDED = "scann_sharded"  # index.json's `kind`: ScaNN per shard


def scann_dir_name(index: int, num_shards: int) -> str:
  """The directory of one shard's serialized ScaNN searcher."""
  return shard_file_name(index, num_shards).replace(".npz", ".scann")


def write_shard_searcher(
  directory: str,
  *,
  index: int,
  num_shards: int,
  shard: IndexShard,
  spec: ScannSpec,
  recall_sample: int = 200,
  k: int = 10,
) -> dict[str, Any] | None:
  """Builds, measures and saves a ScaNN searcher over one index shard.

  Args:
    directory: The index directory.
    index: The shard's number.
    num_shards: Shards in the index.
    shard: The shard as written (`in_id_order`): the searcher's row i is
      its id i.
    spec: ScaNN settings.
    recall_sample: Rows of the shard used as queries to measure ScaNN's
      Recall@k against exact search over the shard (own rows left out).
    k: Neighbours the searcher returns by default, and compared.

  Returns:
    The shard entry's "scann" record (directory, settings, recall), or None
    for a shard of at most k rows (exact search serves it).
  """
  if len(shard.ids) <= k:
    return None
  vectors = np.asarray(shard.vectors, np.float32)
  searcher = build_scann(vectors, spec, k=k)
  name = scann_dir_name(index, num_shards)
  path = os.path.join(files.abspath(directory), name)
  with files.local_directory_to_write(path) as local_dir:
    searcher.serialize(local_dir, relative_path=not files.is_local(path))
  rows = sample_rows(len(vectors), recall_sample, seed=index)
  measured = Index(
    ids=shard.ids, vectors=vectors, kind="scann", info={}, searcher=searcher
  ).measure_recall(vectors[rows], k=k, own_rows=rows)
  settings = scann_record(spec, len(vectors))
  return {"dir": name, "spec": settings, f"recall_at_{k}": measured}


def load_shard_searcher(directory: str, info: dict[str, Any], index: int):
  """The ScaNN searcher of one shard of a "scann_sharded" index, or None
  where the shard has none (too few rows: search it exactly)."""
  import scann

  record = info["shards"][index].get("scann")
  if record is None:
    return None
  path = os.path.join(files.abspath(directory), record["dir"])
  if not files.exists(path):
    raise IndexShardError(f"ScaNN searcher {path} is missing")
  with files.local_directory_to_read(path) as local_dir:
    return scann.scann_ops_pybind.load_searcher(local_dir)


def search_shard_scann(
  searcher, shard: IndexShard, queries: np.ndarray, *, k: int
) -> list[Ranked]:
  """`search_shard` with a shard's ScaNN searcher (exact without one)."""
  if searcher is None or not shard.ids:
    return search_shard(shard, queries, k=k)
  k = min(k, len(shard.ids))
  rows, scores = searcher.search_batched(
    np.asarray(queries, np.float32), final_num_neighbors=k
  )
  return [
    [
      (shard.ids[r], float(s))
      for r, s in zip(row, score, strict=True)
      if np.isfinite(s)
    ]
    for row, score in zip(np.asarray(rows), np.asarray(scores), strict=True)
  ]


def read_shard_ids(
  directory: str, info: dict[str, Any], index: int
) -> list[str]:
  """The ids of one shard of a sharded index, in row order; its vectors are
  not read (nor its checksum checked: `read_shard` checks it).

  Raises:
    IndexShardError: Naming the shard file, if it is missing, unreadable,
      or holds another count of ids than index.json records.
  """
  entry = info["shards"][index]
  path = os.path.join(directory, entry["file"])
  if not files.exists(path):
    raise IndexShardError(f"index shard {path} is missing")
  try:
    with files.load_npz(path) as arrays:
      ids = [str(i) for i in arrays["ids"].tolist()]
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
    message = f"index shard {path} is unreadable: {error}"
    raise IndexShardError(message) from None
  if len(ids) != entry["count"]:
    raise IndexShardError(
      f"index shard {path} holds {len(ids)} ids; {INFO} records "
      f"{entry['count']}"
    )
  return ids


def search_shard(
  shard: IndexShard, queries: np.ndarray, *, k: int
) -> list[Ranked]:
  """Each query's partial top-k in one shard ([queries, d] finished).

  Returns:
    A `Ranked` list per query: at most k (id, score) pairs, best first.
  """
  if not shard.ids:
    return [[] for _ in range(len(queries))]
  found = scoring.top_k(np.asarray(queries, np.float32), shard.vectors, k=k)
  return [
    [(shard.ids[r], float(s)) for r, s in zip(rows, scores, strict=True)]
    for rows, scores in zip(found.indices, found.scores, strict=True)
  ]


def merge_top_k(partials: Iterable[Ranked], *, k: int) -> Ranked:
  """The k best of partial top-k lists of one query.

  Scores descending, equal scores by id: a total order on distinct ids, so
  any grouping and order of the partials merges to the same list, the one
  exact search over the whole index gives.
  """
  pairs = ((str(i), float(s)) for i, s in itertools.chain(*partials))
  return heapq.nsmallest(k, pairs, key=lambda pair: (-pair[1], pair[0]))


def load_info(directory: str) -> dict[str, Any]:
  """An index's index.json (no vectors are read).

  Raises:
    FileNotFoundError: If `directory` holds no index.
    files.UnfinishedError: If it has no `COMPLETED` marker: the index job
      did not finish writing it.
  """
  info_path = os.path.join(files.abspath(directory), INFO)
  if not files.exists(info_path):
    raise FileNotFoundError(f"no index in {directory} (missing {INFO})")
  files.check_marker(directory, job="index")
  with files.open(info_path) as f:
    return json.load(f)


def is_sharded(info: dict[str, Any]) -> bool:
  """Whether index.json describes a sharded index (exact, or ScaNN per
  shard beside the exact shards)."""
  return info.get("layout") == SHARDED


def write_info(directory: str, info: dict[str, Any]) -> None:
  """Writes index.json atomically, then the `COMPLETED` marker: last, once
  every other file of the index is written."""
  files.write_json(os.path.join(directory, INFO), info)
  files.write_marker(directory)


class Index:
  """A built index: search by vectors, save, load."""

  def __init__(
    self,
    *,
    ids: list[str],
    vectors: np.ndarray,
    kind: str,
    info: dict[str, Any],
    searcher: Any = None,
  ):
    if kind not in ("scann", "exact"):
      raise ValueError(f"index kind {kind!r} is not 'scann' or 'exact'")
    self.ids = ids
    self.vectors = np.asarray(vectors, np.float32)
    self.kind = kind
    self.info = info
    self.searcher = searcher

  @classmethod
  def build(
    cls,
    *,
    ids: list[str],
    vectors: np.ndarray,
    kind: str,
    spec: ScannSpec,
    info: dict[str, Any],
    recall_rows: np.ndarray | None = None,
  ) -> "Index":
    """Builds the index and, for ScaNN, measures Recall@10 against exact,
    querying with the encodings at `recall_rows`."""
    vectors = np.asarray(vectors, np.float32)
    searcher = build_scann(vectors, spec) if kind == "scann" else None
    index = cls(
      ids=ids,
      vectors=vectors,
      kind=kind,
      info={**info, "kind": kind, "size": len(ids), "scann": None},
      searcher=searcher,
    )
    if kind == "scann":
      index.info["scann"] = scann_record(spec, len(vectors))
      if recall_rows is not None and len(recall_rows):
        index.info["recall_at_10"] = index.measure_recall(
          vectors[recall_rows], own_rows=recall_rows
        )
    return index

  def measure_recall(
    self,
    queries: np.ndarray,
    *,
    k: int = 10,
    own_rows: np.ndarray | None = None,
  ) -> dict:
    """ScaNN's Recall@k against exact search, and both speeds.

    Args:
      queries: [q, d] finished encodings.
      k: Neighbours compared.
      own_rows: If the queries are encodings of the index, their rows: each
        query's own row is left out of both top-k lists (it would find
        itself, which says nothing about other neighbours).
    """
    extra = 0 if own_rows is None else 1
    start = time.perf_counter()
    approximate, _ = self.searcher.search_batched(
      queries, final_num_neighbors=k + extra
    )
    scann_seconds = time.perf_counter() - start
    start = time.perf_counter()
    exact = scoring.top_k(queries, self.vectors, k=k + extra).indices
    exact_seconds = time.perf_counter() - start
    approximate = np.asarray(approximate)
    if own_rows is not None:
      approximate = _without_own_rows(approximate, own_rows, k)
      exact = _without_own_rows(np.asarray(exact), own_rows, k)
    return {
      "recall": recall_against_exact(approximate, exact),
      "queries": int(len(queries)),
      "scann_queries_per_second": len(queries) / scann_seconds,
      "exact_queries_per_second": len(queries) / exact_seconds,
    }

  def search(self, queries: np.ndarray, *, k: int) -> Neighbors:
    """The k best ids per query ([queries, d] finished encodings)."""
    queries = np.asarray(queries, np.float32)
    k = min(k, len(self.ids))
    if self.kind == "scann":
      rows, scores = self.searcher.search_batched(
        queries, final_num_neighbors=k
      )
      rows, scores = np.asarray(rows), np.asarray(scores)
      if not np.isfinite(scores).all():
        raise ValueError(
          "ScaNN found fewer than k neighbours (searched too few leaves); "
          "raise num_leaves_to_search"
        )
    else:
      result = scoring.top_k(queries, self.vectors, k=k)
      rows, scores = result.indices, result.scores
    return Neighbors(
      ids=[[self.ids[r] for r in row] for row in rows],
      scores=np.asarray(scores, np.float32),
    )

  def save(self, directory: str) -> None:
    """Writes the index whole, index.json and `COMPLETED` last."""
    # ScaNN records artifact paths as given: keep local ones absolute; a
    # remote index is serialized locally with relative paths, copied up.
    directory = files.abspath(directory)
    files.makedirs(directory)
    files.remove_marker(directory)
    with files.open(os.path.join(directory, "ids.json"), "w") as f:
      json.dump(self.ids, f)
    files.save_npy(os.path.join(directory, "vectors.npy"), self.vectors)
    if self.searcher is not None:
      scann_dir = os.path.join(directory, "scann")
      with files.local_directory_to_write(scann_dir) as local_dir:
        self.searcher.serialize(
          local_dir, relative_path=not files.is_local(directory)
        )
    # Saved whole (ids.json, vectors.npy), even if loaded from shards.
    info = {
      k: v
      for k, v in self.info.items()
      if k not in ("layout", "shards", "dtype")
    }
    write_info(directory, info)

  @classmethod
  def load(cls, directory: str, *, verify: bool = True) -> "Index":
    """Loads a saved index; a sharded one whole, in id order.

    Args:
      directory: The index directory.
      verify: Check each shard's sha256 (sharded indexes).

    Raises:
      FileNotFoundError: If `directory` holds no index.
      files.UnfinishedError: If it has no `COMPLETED` marker.
      IndexShardError: Naming the file, if a shard is missing or corrupted.
    """
    directory = files.abspath(directory)
    info = load_info(directory)
    if is_sharded(info):
      return cls._load_shards(directory, info, verify=verify)
    with files.open(os.path.join(directory, "ids.json")) as f:
      ids = json.load(f)
    vectors = files.load_npy(os.path.join(directory, "vectors.npy"))
    searcher = None
    if info["kind"] == "scann":
      import scann

      scann_dir = os.path.join(directory, "scann")
      with files.local_directory_to_read(scann_dir) as local_dir:
        searcher = scann.scann_ops_pybind.load_searcher(local_dir)
    return cls(
      ids=ids, vectors=vectors, kind=info["kind"], info=info, searcher=searcher
    )

  @classmethod
  def _load_shards(cls, directory: str, info: dict, *, verify: bool):
    shards = [
      read_shard(directory, info, i, verify=verify)
      for i in range(len(info["shards"]))
    ]
    ids = [i for shard in shards for i in shard.ids]
    vectors = np.zeros((0, info["dim"]), np.float32)
    if shards:
      vectors = np.concatenate(
        [np.asarray(s.vectors, np.float32) for s in shards]
      )
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return cls(
      ids=[ids[i] for i in order],
      vectors=vectors[order],
      kind="exact",  # Whole, a ScaNN-per-shard index is searched exactly.
      info=info,
    )
