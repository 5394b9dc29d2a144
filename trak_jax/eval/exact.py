"""The exact reference: cosines of whole, unprojected corrected gradients.

For a model small enough, the evaluation ranks the corpus by

    s(q, z) = ĝ'(q) · ĝ'(z),    ĝ' = g' / ‖g'‖,  g' = g ⊘ sqrt(V + ε)

over every parameter: TrackStar without the projection and without R
(DESIGN.md section 1), the ceiling that the projected methods are measured
against. The queries' whole gradients are computed once per group that fits
`budget_bytes`; the corpus streams past them in batches, so no store of
whole gradients is ever written. The result is the [queries, corpus] score
matrix, small for an evaluation set.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import projection as projection_lib


class ExactScores(NamedTuple):
  scores: np.ndarray  # [queries, corpus] float32 cosines
  ids: list[str]  # [corpus] ids, the columns of `scores`


class TooLargeError(ValueError):
  """The model has more parameters than the exact reference is run for."""


def exact_config(
  correction: str | correction_lib.CorrectionSpec,
) -> encoder_lib.EncoderConfig:
  """The encoder of the exact reference: whole corrected gradient, unit norm.

  `correction` is a kind, or a whole spec (e.g. an estimated V's, with the
  path of the saved V).
  """
  spec = correction
  if isinstance(spec, str):
    spec = correction_lib.CorrectionSpec(kind=spec)
  config = encoder_lib.preset(
    "trackstar_no_hessian",
    correction=spec.kind,
    projection=projection_lib.ProjectionSpec(kind="none"),
  )
  return dataclasses.replace(config, correction=spec)


def num_params(params: Any) -> int:
  import jax

  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def exact_scores(
  loaded: Any,
  *,
  correction: str | correction_lib.CorrectionSpec,
  corpus_batches: Sequence[tuple[Sequence[str], data_lib.Batch]],
  queries: Sequence[data_lib.Query],
  batch_size: int,
  budget_bytes: int = 4 * 2**30,
  max_params: int = 20_000_000,
  progress: Any = None,
) -> ExactScores:
  """Cosines of whole corrected gradients between queries and the corpus.

  Args:
    loaded: The loaded checkpoint.
    correction: The correction: a kind ("adafactor", "adam", "none") or a
      `CorrectionSpec` (an estimated V's, with its saved path).
    corpus_batches: (ids of the filled rows, padded batch) pairs.
    queries: The queries (loss on the target given the prompt).
    batch_size: Queries per encoder call.
    budget_bytes: Memory for the queries' whole gradients at once; more
      queries go in groups, each streaming the corpus again.
    max_params: Refuse models larger than this.
    progress: Optional callable(message) for progress lines.

  Returns:
    The score matrix and the corpus ids of its columns.

  Raises:
    TooLargeError: If the model has more than `max_params` parameters.
  """
  size = num_params(loaded.params)
  if size > max_params:
    raise TooLargeError(
      f"the exact reference needs whole gradients: {size:,} parameters is "
      f"more than exact_max_params={max_params:,}"
    )
  encoder = encoder_lib.from_checkpoint(loaded, exact_config(correction))
  group = max(1, budget_bytes // (4 * size))
  ids = [i for row_ids, _ in corpus_batches for i in row_ids]
  scores = np.zeros((len(queries), len(ids)), np.float32)
  for start in range(0, len(queries), group):
    chunk = list(queries[start : start + group])
    query_side = encoder_lib.encode_queries(
      encoder,
      loaded.tokenizer,
      chunk,
      batch_size=batch_size,
      max_len=loaded.max_len,
    ).features  # [group, P], unit rows
    column = 0
    for step, (row_ids, batch) in enumerate(corpus_batches):
      corpus_side = np.asarray(encoder.encode(batch).features)[: len(row_ids)]
      # [group, P] @ [P, rows] -> [group, rows]
      scores[start : start + len(chunk), column : column + len(row_ids)] = (
        query_side @ corpus_side.T
      )
      column += len(row_ids)
      if progress is not None and step % 25 == 0:
        progress(
          f"exact reference: queries {start + 1}-{start + len(chunk)}, "
          f"corpus batch {step + 1}/{len(corpus_batches)}"
        )
  return ExactScores(scores, ids)


def top_k(scores: np.ndarray, ids: Sequence[str], *, k: int):
  """Per row, the k best (ids, scores), best first."""
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return [
    ([ids[j] for j in row], scores[i, row].tolist())
    for i, row in enumerate(order)
  ]


def overlap_at_k(ranked: Sequence[str], reference: Sequence[str], *, k: int):
  """|top k ∩ reference top k| / k."""
  return len(set(ranked[:k]) & set(reference[:k])) / k


def spearman(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Per row, the Spearman correlation of `scores` against `reference`."""

  def ranks(x):
    return np.argsort(np.argsort(x, axis=1), axis=1).astype(np.float64)

  a, b = ranks(scores), ranks(reference)
  a -= a.mean(1, keepdims=True)
  b -= b.mean(1, keepdims=True)
  denominator = np.sqrt((a**2).sum(1) * (b**2).sum(1))
  return np.where(
    denominator > 0,
    (a * b).sum(1) / np.where(denominator > 0, denominator, 1),
    0.0,
  )
