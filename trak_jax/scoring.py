"""Exact top-k scoring of queries against a set of encodings.

Scores are inner products I(z, q) = Ḡ(z) · Ḡ(q). The keys are scanned in
chunks with a running top-k, so memory stays bounded by
[queries, chunk + k] whatever the number of keys.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class TopK(NamedTuple):
  scores: np.ndarray  # [queries, k] float32, descending
  indices: np.ndarray  # [queries, k] int64 rows of the keys


@functools.partial(jax.jit, static_argnames=("k",))
def _merge_chunk(
  best_scores, best_indices, queries, chunk, offset, valid, *, k
):
  # [q, d] @ [d, c] -> [q, c]
  scores = queries @ chunk.T
  scores = jnp.where(jnp.arange(chunk.shape[0]) < valid, scores, -jnp.inf)
  indices = offset + jnp.arange(chunk.shape[0], dtype=jnp.int32)
  all_scores = jnp.concatenate([best_scores, scores], axis=1)
  all_indices = jnp.concatenate(
    [best_indices, jnp.broadcast_to(indices, scores.shape)], axis=1
  )
  top_scores, position = jax.lax.top_k(all_scores, k)
  return top_scores, jnp.take_along_axis(all_indices, position, axis=1)


def top_k(
  queries: np.ndarray,
  keys: np.ndarray,
  *,
  k: int,
  chunk_size: int = 8192,
) -> TopK:
  """The k keys of largest inner product with each query.

  Args:
    queries: [queries, d].
    keys: [keys, d] (any array-like supporting row slices, e.g. a memmap).
    k: How many to return (at most the number of keys).
    chunk_size: Keys per chunk.

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
  best_scores = jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32)
  best_indices = jnp.full((queries.shape[0], k), -1, jnp.int32)
  chunk_size = min(chunk_size, max(num_keys, 1))
  for start in range(0, num_keys, chunk_size):
    chunk = np.asarray(keys[start : start + chunk_size], np.float32)
    valid = chunk.shape[0]
    if valid < chunk_size:  # Pad the last chunk: one compiled shape.
      chunk = np.pad(chunk, ((0, chunk_size - valid), (0, 0)))
    best_scores, best_indices = _merge_chunk(
      best_scores, best_indices, queries, chunk, start, valid, k=k
    )
  return TopK(np.asarray(best_scores), np.asarray(best_indices, np.int64))
