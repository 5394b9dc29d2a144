"""Search of finished encodings as one SPMD program on the device mesh.

The finished corpus encodings Ḡ(z) (R^(-1/2) applied, normalised: what an
exact index stores) lie across every device of the mesh, split along the
corpus axis; the finished queries Ḡ(q) are replicated. Each device scores
the queries against its own rows, chunk by chunk (I = Ḡ(z) · Ḡ(q), a
matmul), and keeps a running top-k; the devices' k candidates are then
all-gathered and merged into the final top-k. It is the sharded search of
the retrieval job (`index.search_shard`, then `index.merge_top_k`) with
devices for shards and a collective for the combine.

Layout. The corpus axis is split over both mesh axes, `data` and `model`
folded into one (`ROWS`), so all devices hold a slice: with D devices each
holds one contiguous block of `rows_per_device` rows (a multiple of the
chunk; D * rows_per_device >= the corpus, the tail is padding). Every row
carries an int32 key, its place in the order that breaks ties; padding
rows carry `PAD_KEY` and score -inf, so they never win. Within a device's
block rows are in ascending key order, so `lax.top_k`, which keeps the
lower position of equal scores, breaks ties by key there; the merge across
devices sorts by (score descending, key). The keys reproduce the exact
search that is being distributed: row numbers for an array in memory
(`place`; ties by row, as `scoring.top_k` and `Index.search`), ranks of
the ids in sorted order for an index directory (`load_index`; ties by id,
as `index.merge_top_k` and the retrieval job). Vectors keep the index's
dtype on device (bfloat16 halves the memory; int8 rows are dequantised
to bfloat16, `index.memory_dtype`) and are scored in float32, as exact
search scores them.

`load_index` streams a sharded exact index onto the mesh without a host
copy of the store: the ids of every shard are read first (no vectors: the
host keeps the ids and two integers per row), then each device's block is
read from the few index shards it spans (one shard cached at a time),
put in key order, and placed on that device alone
(`jax.make_array_from_callback`). No process holds more than one block and
one index shard of vectors at once, and in a multi-process job (one
global mesh, `trak_jax.distributed`) each process reads only the blocks of
its own devices; every process must call `load_index` and `search`.

`approx=True` picks each chunk's candidates with `jax.lax.approx_max_k` at
a `recall_target` (recorded in the result); the merges stay exact, so a
true neighbour passes one approximate selection. approx_max_k is only
optimised on TPU; on CPU XLA computes it as an exact top-k, so there the
result is exact.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trak_jax import files, partitioning
from trak_jax import index as index_core

# The corpus axis: over every device, `data` and `model` folded together.
ROWS = (partitioning.DATA_AXIS, partitioning.MODEL_AXIS)
PAD_KEY = np.iinfo(np.int32).max  # The key of padding rows: never wins.
CHUNK_ROWS = 16_384  # Rows scored at once on a device: [queries, chunk].


class Layout(NamedTuple):
  size: int  # rows of the corpus (the rest are padding)
  devices: int  # devices of the mesh, each holding one block
  rows_per_device: int  # rows of a block, a multiple of chunk_rows
  chunk_rows: int  # rows scored at once


def plan_layout(size: int, *, devices: int, chunk_rows: int) -> Layout:
  """Blocks of at least ceil(size / devices) rows, in whole chunks."""
  per_device = max(-(-size // devices), 1)
  chunk = min(chunk_rows, per_device)
  per_device = -(-per_device // chunk) * chunk
  return Layout(size, devices, per_device, chunk)


def corpus_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Rows over every device of `mesh`; other axes replicated."""
  return NamedSharding(mesh, PartitionSpec(ROWS, *([None] * (ndim - 1))))


@dataclasses.dataclass(frozen=True)
class MeshCorpus:
  """Finished encodings placed on a mesh (see the module's layout).

  Attributes:
    vectors: [devices * rows_per_device, d] finished encodings (float32 or
      bfloat16), rows over every device (`corpus_sharding`).
    keys: [devices * rows_per_device] int32 tie-order keys, ascending in
      each device's block; `PAD_KEY` on padding rows.
    ids: [size] the example id of each key.
    layout: Sizes of the blocks.
    mesh: The mesh the arrays lie on.
  """

  vectors: jax.Array
  keys: jax.Array
  ids: tuple[str, ...]
  layout: Layout
  mesh: Mesh

  def search(self, queries: np.ndarray, *, k: int, **options):
    """`search(self, queries, k=k, **options)`, as `Index.search` is
    called: a MeshCorpus stands in for an index."""
    return search(self, queries, k=k, **options)


class MeshNeighbors(NamedTuple):
  ids: list[list[str]]  # [queries][k] example ids, best first
  scores: np.ndarray  # [queries, k] float32
  keys: np.ndarray  # [queries, k] int32 keys of the corpus rows found
  recall_target: float | None  # approx_max_k's target; None: exact search


def _select(scores, keys, *, k: int, approx: bool, recall_target, total):
  """A chunk's k candidates: [q, c] scores, [c] keys -> [q, k'] each."""
  k = min(k, scores.shape[1])
  if approx:
    top, position = jax.lax.approx_max_k(
      scores,
      k,
      recall_target=recall_target,
      reduction_input_size_override=total,
    )
  else:
    top, position = jax.lax.top_k(scores, k)  # Equal scores: lower row.
  return top, keys[position]


def _merge(scores, keys, *, k: int):
  """The k best of [q, n] candidates: scores descending, then key."""
  negated, keys = jax.lax.sort((-scores, keys), dimension=1, num_keys=2)
  return -negated[:, :k], keys[:, :k]


def _device_top_k(vectors, keys, queries, *, k, chunk_rows, select, precision):
  """One device's running top-k over its block, chunk by chunk."""
  chunks = vectors.reshape(-1, chunk_rows, vectors.shape[1])
  key_chunks = keys.reshape(-1, chunk_rows)
  best = (
    jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32),
    jnp.full((queries.shape[0], k), PAD_KEY, jnp.int32),
  )
  best = jax.lax.pcast(best, ROWS, to="varying")  # Each device its own.

  def step(best, chunk):
    rows, row_keys = chunk
    # [q, d] @ [d, c] -> [q, c]: Ḡ(z) · Ḡ(q), the paper's I(z, q).
    scores = jnp.matmul(
      queries, rows.astype(jnp.float32).T, precision=precision
    )
    scores = jnp.where(row_keys == PAD_KEY, -jnp.inf, scores)
    found = select(scores, row_keys)
    # Earlier chunks hold lower keys: first in the concatenation, they win
    # ties in top_k as in one exact search.
    merged_scores = jnp.concatenate([best[0], found[0]], axis=1)
    merged_keys = jnp.concatenate([best[1], found[1]], axis=1)
    top, position = jax.lax.top_k(merged_scores, k)
    return (top, jnp.take_along_axis(merged_keys, position, axis=1)), None

  best, _ = jax.lax.scan(step, best, (chunks, key_chunks))
  return best


@functools.lru_cache(maxsize=64)
def _searcher(
  mesh: Mesh, layout: Layout, *, k, approx, recall_target, precision
):
  """The jitted SPMD search of one layout, k and selection."""
  total = layout.devices * layout.rows_per_device
  select = functools.partial(
    _select, k=k, approx=approx, recall_target=recall_target, total=total
  )

  def program(vectors, keys, queries):
    scores, found = _device_top_k(
      vectors,
      keys,
      queries,
      k=k,
      chunk_rows=layout.chunk_rows,
      select=select,
      precision=precision,
    )
    # [q, k] per device -> [q, devices * k] on every device.
    gathered = jax.lax.all_gather(
      (scores, found), ROWS, axis=1, tiled=True, to="invarying"
    )
    return _merge(*gathered, k=k)

  row_spec = PartitionSpec(ROWS)
  mapped = jax.shard_map(
    program,
    mesh=mesh,
    in_specs=(PartitionSpec(ROWS, None), row_spec, PartitionSpec()),
    out_specs=(PartitionSpec(), PartitionSpec()),
  )
  return jax.jit(mapped)


def _replicated(mesh: Mesh, array: np.ndarray) -> jax.Array:
  # Every process passes the same array; each places it on its devices.
  return jax.make_array_from_callback(
    array.shape, partitioning.replicated(mesh), lambda index: array[index]
  )


def _host(array: jax.Array) -> np.ndarray:
  """A replicated result on the host (any process: its own copy)."""
  return np.asarray(array.addressable_data(0))


def search(
  corpus: MeshCorpus,
  queries: np.ndarray,
  *,
  k: int,
  approx: bool = False,
  recall_target: float = 0.95,
  precision: str = "highest",
) -> MeshNeighbors:
  """The k best corpus rows per query, searched on the corpus's mesh.

  Args:
    corpus: Encodings placed by `place` or `load_index`.
    queries: [queries, d] finished query encodings (the same on every
      process); scored in float32.
    k: Neighbours per query (at most the corpus size).
    approx: Pick each chunk's candidates with `jax.lax.approx_max_k`
      (only faster on TPU; exact on CPU).
    recall_target: approx_max_k's recall target (with `approx`).
    precision: The matmul's `jax.lax.Precision`. "highest" scores in
      float32 on every backend, as exact search on the CPU does; "default"
      lets TPUs use bfloat16 passes and GPUs TF32 (faster, scores to about
      1e-3, so near-ties may swap).

  Returns:
    Ids, scores and keys, best first; without `approx` the result of exact
    search, ties broken by key (see the module docstring).

  Raises:
    ValueError: If the queries' d is not the corpus's.
  """
  queries = np.asarray(queries, np.float32)
  if queries.ndim != 2 or queries.shape[1] != corpus.vectors.shape[1]:
    raise ValueError(
      f"queries of shape {queries.shape}; the corpus has "
      f"d={corpus.vectors.shape[1]}"
    )
  k = min(k, corpus.layout.size)
  target = float(recall_target) if approx else None
  if k == 0:  # An empty corpus.
    empty = np.zeros((len(queries), 0))
    return MeshNeighbors(
      [[] for _ in queries],
      empty.astype(np.float32),
      empty.astype(np.int32),
      target,
    )
  program = _searcher(
    corpus.mesh,
    corpus.layout,
    k=k,
    approx=approx,
    recall_target=target,
    precision=precision,
  )
  scores, keys = program(
    corpus.vectors, corpus.keys, _replicated(corpus.mesh, queries)
  )
  scores, keys = _host(scores), _host(keys)
  return MeshNeighbors(
    ids=[[corpus.ids[key] for key in row] for row in keys.tolist()],
    scores=scores,
    keys=keys,
    recall_target=target,
  )


def _block_rows(index: tuple[slice, ...], total: int) -> range:
  """The rows of the block `make_array_from_callback` asks for."""
  return range(*index[0].indices(total))


def _placed(mesh: Mesh, layout: Layout, shape, dtype, block) -> jax.Array:
  """An array over `corpus_sharding`, each device's rows from `block`."""
  total = layout.devices * layout.rows_per_device
  return jax.make_array_from_callback(
    (total, *shape),
    corpus_sharding(mesh, 1 + len(shape)),
    lambda index: block(_block_rows(index, total)),
    dtype=dtype,
  )


def _padded_keys(keys: np.ndarray, total: int) -> np.ndarray:
  return np.concatenate(
    [keys.astype(np.int32), np.full(total - len(keys), PAD_KEY, np.int32)]
  )


def place(
  vectors: np.ndarray,
  *,
  mesh: Mesh,
  ids: Sequence[str] | None = None,
  chunk_rows: int = CHUNK_ROWS,
) -> MeshCorpus:
  """Places [n, d] finished encodings held in memory on the mesh.

  Row r goes to block r // rows_per_device with key r: ties break by row,
  as in `scoring.top_k` and `Index.search`.

  Args:
    vectors: [n, d] float32 or bfloat16 (the same on every process).
    mesh: The mesh; its `data` and `model` axes both split the rows.
    ids: [n] example ids (default: the row numbers, as strings).
    chunk_rows: Rows scored at once on a device.
  """
  vectors = np.asarray(vectors)
  size, dim = vectors.shape
  layout = plan_layout(size, devices=mesh.size, chunk_rows=chunk_rows)
  total = layout.devices * layout.rows_per_device
  keys = _padded_keys(np.arange(size), total)

  def block(rows: range) -> np.ndarray:
    found = vectors[rows.start : min(rows.stop, size)]
    return np.pad(found, ((0, len(rows) - len(found)), (0, 0)))

  return MeshCorpus(
    vectors=_placed(mesh, layout, (dim,), vectors.dtype, block),
    keys=_placed(
      mesh, layout, (), np.int32, lambda rows: keys[rows.start : rows.stop]
    ),
    ids=tuple(ids) if ids is not None else tuple(map(str, range(size))),
    layout=layout,
    mesh=mesh,
  )


class _ShardReader:
  """Rows [start, stop) of the shards laid end to end, one shard cached."""

  def __init__(self, directory: str, info: dict[str, Any], *, verify: bool):
    self._directory = directory
    self._info = info
    self._verify = verify
    counts = [entry["count"] for entry in info["shards"]]
    self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    self._cached: tuple[int, np.ndarray] | None = None

  def _shard(self, number: int) -> np.ndarray:
    if self._cached is None or self._cached[0] != number:
      shard = index_core.read_shard(
        self._directory, self._info, number, verify=self._verify
      )
      self._cached = (number, shard.vectors)
    return self._cached[1]

  def rows(self, start: int, stop: int) -> np.ndarray:
    """[stop - start, d] vectors in the index's `memory_dtype`."""
    dtype = index_core.memory_dtype(self._info["dtype"])
    out = np.zeros((stop - start, self._info["dim"]), dtype)
    first = int(np.searchsorted(self._starts, start, side="right")) - 1
    for number in range(max(first, 0), len(self._starts) - 1):
      begin, end = self._starts[number], self._starts[number + 1]
      if begin >= stop:
        break
      low, high = max(begin, start), min(end, stop)
      if low < high:
        vectors = self._shard(number)
        out[low - start : high - start] = vectors[low - begin : high - begin]
    return out


def _id_keys(ids: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
  """Each row's rank among the sorted ids, and the sorted ids."""
  order = sorted(range(len(ids)), key=ids.__getitem__)  # As index.py sorts.
  ranks = np.empty(len(ids), np.int64)
  ranks[order] = np.arange(len(ids))
  return ranks, tuple(ids[i] for i in order)


def _block_order(keys: np.ndarray, rows_per_device: int) -> np.ndarray:
  """The permutation that puts each block of rows in ascending key order."""
  blocks = keys.reshape(-1, rows_per_device)
  order = np.argsort(blocks, axis=1, kind="stable")
  starts = np.arange(0, len(keys), rows_per_device)[:, None]
  return (order + starts).reshape(-1)


def load_index(
  directory: str,
  *,
  mesh: Mesh,
  verify: bool = True,
  chunk_rows: int = CHUNK_ROWS,
) -> MeshCorpus:
  """Streams a sharded exact index onto the mesh, each device its block.

  The shards are laid end to end in index.json's order and cut into one
  contiguous block per device; a block's rows are put in id order, keys
  are the ids' ranks: ties break by id, as in the retrieval job's merge.

  Args:
    directory: A sharded exact index (what the index job writes for
      kind "exact").
    mesh: The mesh; its `data` and `model` axes both split the rows.
    verify: Check each shard's sha256 against index.json when it is read.
    chunk_rows: Rows scored at once on a device.

  Raises:
    FileNotFoundError: If `directory` holds no index.
    ValueError: If the index is not sharded.
    index.IndexShardError: Naming the file, if a shard is missing,
      corrupted or unreadable.
  """
  directory = files.abspath(directory)
  info = index_core.load_info(directory)
  if not index_core.is_sharded(info):
    raise ValueError(
      f"index {directory} is not a sharded exact index (layout "
      f"{info.get('layout')!r}, kind {info.get('kind')!r})"
    )
  ids = [
    example_id
    for number in range(len(info["shards"]))
    for example_id in index_core.read_shard_ids(directory, info, number)
  ]
  layout = plan_layout(len(ids), devices=mesh.size, chunk_rows=chunk_rows)
  total = layout.devices * layout.rows_per_device
  ranks, sorted_ids = _id_keys(ids)
  keys = _padded_keys(ranks, total)
  order = _block_order(keys, layout.rows_per_device)
  reader = _ShardReader(directory, info, verify=verify)

  def block(rows: range) -> np.ndarray:
    # A block's rows in key order come from its own stretch of the shards.
    found = reader.rows(rows.start, min(rows.stop, len(ids)))
    found = np.pad(found, ((0, len(rows) - len(found)), (0, 0)))
    return found[order[rows.start : rows.stop] - rows.start]

  dtype = index_core.memory_dtype(info["dtype"])
  return MeshCorpus(
    vectors=_placed(mesh, layout, (info["dim"],), dtype, block),
    keys=_placed(
      mesh,
      layout,
      (),
      np.int32,
      lambda rows: keys[order[rows.start : rows.stop]],
    ),
    ids=sorted_ids,
    layout=layout,
    mesh=mesh,
  )
