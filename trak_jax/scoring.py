"""Exact top-k scoring of queries against a set of encodings.

Scores are inner products I(z, q) = Ḡ(z) · Ḡ(q). The keys are scanned in
chunks with a running top-k, so memory stays bounded by a block of keys
and [queries, chunk + k] scores whatever the number of keys.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class TopK(NamedTuple):
  scores: np.ndarray  # [queries, k] float32, descending
  indices: np.ndarray  # [queries, k] int64 rows of the keys


# Keys read, placed on the device and scanned per jitted call: bounded
# memory for a memmapped store, few calls for an index shard.
BLOCK_BYTES = 256 << 20
# Key rows a device array may alias without a copy (XLA's CPU client
# aliases a 64-byte aligned host buffer).
ALIGNMENT = 64


@functools.partial(jax.jit, static_argnames=("k", "chunk"))
def _scan_block(best_scores, best_indices, queries, block, offset, *, k, chunk):
  """Merges a block of keys ([n, d], n >= chunk) into the running top-k.

  One program scans the block chunk by chunk: a chunk's scores in float32
  (a bfloat16 block is converted a chunk at a time), the chunk's own top k,
  then a merge with the running k. A last chunk that would run past the
  block is moved back to end at the block's end, its rows already scanned
  masked, so every chunk has one shape and no row is padded.
  """
  rows = block.shape[0]
  starts = jnp.arange(0, rows, chunk)

  def merge(carry, start):
    scores, indices = carry
    first = jnp.minimum(start, rows - chunk)  # The chunk's first row.
    keys = jax.lax.dynamic_slice_in_dim(block, first, chunk)
    keys = keys.astype(jnp.float32)
    # [q, d] @ [d, c] -> [q, c]
    chunk_scores = queries @ keys.T
    row = first + jnp.arange(chunk)
    chunk_scores = jnp.where(row >= start, chunk_scores, -jnp.inf)
    top, position = jax.lax.top_k(chunk_scores, min(k, chunk))
    # The running k first: equal scores keep the lower index.
    all_scores = jnp.concatenate([scores, top], axis=1)
    all_indices = jnp.concatenate([indices, offset + first + position], 1)
    scores, position = jax.lax.top_k(all_scores, k)
    return (scores, jnp.take_along_axis(all_indices, position, 1)), None

  (scores, indices), _ = jax.lax.scan(
    merge, (best_scores, best_indices), starts
  )
  return scores, indices


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
  """An uninitialised C-order array at an `ALIGNMENT`-byte address."""
  dtype = np.dtype(dtype)
  size = int(np.prod(shape)) * dtype.itemsize
  buffer = np.empty(size + ALIGNMENT, np.uint8)
  skip = -buffer.ctypes.data % ALIGNMENT
  return buffer[skip : skip + size].view(dtype).reshape(shape)


def aligned(array: np.ndarray) -> np.ndarray:
  """`array` in C order at an `ALIGNMENT`-byte address (a copy if not)."""
  array = np.ascontiguousarray(array)
  if array.ctypes.data % ALIGNMENT == 0:
    return array
  copy = aligned_empty(array.shape, array.dtype)
  copy[...] = array
  return copy


def _device_block(keys) -> jax.Array:
  """Rows of keys on the device, float32 or bfloat16 as stored (other
  dtypes as float32), aliased rather than copied where aligned."""
  block = np.asarray(keys)
  if block.dtype not in (np.float32, jnp.bfloat16):
    block = block.astype(np.float32)
  return jax.device_put(block)


def top_k(
  queries: np.ndarray,
  keys: np.ndarray,
  *,
  k: int,
  chunk_size: int = 8192,
  block_bytes: int = BLOCK_BYTES,
) -> TopK:
  """The k keys of largest inner product with each query.

  Keys are read a block (about `block_bytes`) at a time and each block is
  scanned in one jitted call, `chunk_size` keys scored at once; memory is
  one block and a [queries, chunk] score block. A block of an array in
  memory is used in place when its rows are aligned (`aligned`).

  Args:
    queries: [queries, d].
    keys: [keys, d] (any array-like supporting row slices, e.g. a memmap),
      float32 or bfloat16 (scored in float32), or another dtype read as
      float32.
    k: How many to return (at most the number of keys).
    chunk_size: Keys scored at once.
    block_bytes: About how many bytes of keys one call reads.

  Returns:
    Scores and key indices, best first; ties keep the lower index first.
  """
  num_keys = keys.shape[0]
  if queries.shape[1] != keys.shape[1]:
    raise ValueError(
      f"queries have d={queries.shape[1]}, keys have d={keys.shape[1]}"
    )
  k = min(k, num_keys)
  queries = jnp.asarray(queries, jnp.float32)
  scores = jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32)
  indices = jnp.full((queries.shape[0], k), -1, jnp.int32)
  row_bytes = keys.shape[1] * 4  # As scored: float32.
  block_rows = max(
    chunk_size, block_bytes // row_bytes // chunk_size * chunk_size
  )
  for start in range(0, num_keys, block_rows):
    block = _device_block(keys[start : start + block_rows])
    scores, indices = _scan_block(
      scores,
      indices,
      queries,
      block,
      start,
      k=k,
      chunk=min(chunk_size, block.shape[0]),
    )
  return TopK(np.asarray(scores), np.asarray(indices, np.int64))
