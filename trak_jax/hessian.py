"""Task-specific Hessian approximation R and its inverse square root.

DESIGN.md section 1, "R": R = λ R_eval + (1 − λ) R_train, where each R is the
autocorrelation E[φφᵀ] of projected, corrected gradients (R_train from a
sample of the corpus, R_eval from the queries). λ is given, or chosen so that
the k-th largest eigenvalues of λ R_eval and (1 − λ) R_train meet:

    λ e_k(R_eval) = (1 − λ) e_k(R_train)  =>  λ = e_k(R_train) /
                                                 (e_k(R_train) + e_k(R_eval))

R is accumulated in float64 from streamed batches; R^(-1/2) comes from an
eigendecomposition in float64 with damping, and is applied to both the
corpus and the query side (a one-sided R⁻¹ would be undone by the
normalisation). At large d, R is block-diagonal, one block per parameter
block of the projection layout.
"""

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trak_jax import files

KINDS = ("none", "train", "mixed")
MAX_FULL_DIM = 16384  # A full float64 R of this d takes 2 GiB.


@dataclasses.dataclass(frozen=True)
class HessianSpec:
  """How R is built.

  Attributes:
    kind: "none", "train" (R_train only) or "mixed".
    mix: λ; None chooses it by the k-th-eigenvalue rule.
    eigen_k: k of that rule; None uses round(d * 1000 / 65536), the paper's
      k = 1000 at d = 2^16.
    block_diagonal: One block per parameter instead of a full d x d R.
    damping: Added to R's eigenvalues, as a fraction of their mean; 0 gives
      the pseudo-inverse square root on R's range.
    train_sample: Corpus examples sampled for R_train.
    seed: Seed of that sample.
  """

  kind: str = "mixed"
  mix: float | None = None
  eigen_k: int | None = None
  block_diagonal: bool = False
  damping: float = 1e-3
  train_sample: int = 2048
  seed: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"hessian kind {self.kind!r} is not one of {KINDS}")
    if self.mix is not None and not 0.0 <= self.mix <= 1.0:
      raise ValueError(f"hessian mix λ={self.mix} is not in [0, 1]")


class Preconditioner(NamedTuple):
  """R^(-1/2) as diagonal blocks (one block when R is full)."""

  blocks: tuple[jax.Array, ...]  # each [b, b] float32; sizes add up to d


class Autocorrelation:
  """Streams φ batches into float64 per-block sums of φφᵀ.

  Args:
    block_sizes: Sizes of the diagonal blocks, summing to d ([d] for full).
  """

  def __init__(self, block_sizes: Sequence[int]):
    self.block_sizes = tuple(int(b) for b in block_sizes)
    self.sums = [np.zeros((b, b), np.float64) for b in self.block_sizes]
    self.count = 0

  def update(self, phi: np.ndarray) -> None:
    """Adds a [batch, d] batch (rows with non-finite values must be dropped)."""
    phi = np.asarray(phi, np.float64)
    if phi.shape[1] != sum(self.block_sizes):
      raise ValueError(
        f"features have d={phi.shape[1]}, R has d={sum(self.block_sizes)}"
      )
    start = 0
    for block, size in enumerate(self.block_sizes):
      part = phi[:, start : start + size]
      self.sums[block] += part.T @ part
      start += size
    self.count += phi.shape[0]

  def merge(self, other: "Autocorrelation") -> "Autocorrelation":
    if other.block_sizes != self.block_sizes:
      raise ValueError("cannot merge autocorrelations of different blocks")
    merged = Autocorrelation(self.block_sizes)
    merged.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
    merged.count = self.count + other.count
    return merged

  def mean(self) -> list[np.ndarray]:
    """E[φφᵀ] per block, float64."""
    if not self.count:
      raise ValueError("no examples were accumulated")
    return [s / self.count for s in self.sums]


def block_sizes(dim: int, layout_sizes: Sequence[int], spec: HessianSpec):
  """Block sizes of R: the layout's blocks, or one full block.

  Raises:
    ValueError: If a full R would be too large.
  """
  if spec.block_diagonal:
    return list(layout_sizes)
  if dim > MAX_FULL_DIM:
    raise ValueError(
      f"a full R at d={dim} needs {dim * dim * 8 / 2**30:.0f} GiB in float64;"
      " set block_diagonal=True"
    )
  return [dim]


def kth_eigenvalue(blocks: Sequence[np.ndarray], k: int) -> float:
  """The k-th largest eigenvalue of a block-diagonal matrix (1-based k)."""
  values = np.concatenate([np.linalg.eigvalsh(b) for b in blocks])
  if not 1 <= k <= values.size:
    raise ValueError(f"k={k} is outside 1..{values.size}")
  return float(np.sort(values)[::-1][k - 1])


def auto_mix(
  train_blocks: Sequence[np.ndarray],
  eval_blocks: Sequence[np.ndarray],
  *,
  k: int,
) -> float:
  """λ at which the k-th eigenvalues of λ R_eval and (1−λ) R_train meet."""
  e_train = kth_eigenvalue(train_blocks, k)
  e_eval = kth_eigenvalue(eval_blocks, k)
  if e_train + e_eval <= 0:
    raise ValueError(f"k-th eigenvalues are both zero (k={k})")
  return e_train / (e_train + e_eval)


def inverse_sqrt(matrix: np.ndarray, *, damping: float) -> np.ndarray:
  """(R + δI)^(-1/2) in float64, δ = damping · mean eigenvalue.

  With damping 0 this is the pseudo-inverse square root: eigenvalues below
  the numerical tolerance count as zero, so R^(-1/2) R R^(-1/2) is the
  identity on R's range.
  """
  values, vectors = np.linalg.eigh(np.asarray(matrix, np.float64))
  values = np.clip(values, 0.0, None)
  delta = damping * values.mean()
  tolerance = values.max() * matrix.shape[0] * np.finfo(np.float64).eps
  kept = values + delta > tolerance
  scale = np.where(kept, 1.0 / np.sqrt(np.where(kept, values + delta, 1.0)), 0)
  return (vectors * scale) @ vectors.T


class Fitted(NamedTuple):
  preconditioner: Preconditioner
  mix: float  # the λ used (0 for "train")
  eigen_k: int | None  # k of the auto rule, if it chose λ


def fit(
  spec: HessianSpec,
  train_stats: Autocorrelation,
  eval_stats: Autocorrelation | None = None,
) -> Fitted:
  """R^(-1/2) from accumulated statistics, as `spec` says.

  Raises:
    ValueError: If `spec` mixes in R_eval and none is given, or kind is
      "none".
  """
  if spec.kind == "none":
    raise ValueError("hessian kind 'none' has no preconditioner")
  train_blocks = train_stats.mean()
  mix, k = 0.0, None
  if spec.kind == "mixed":
    if eval_stats is None:
      raise ValueError("hessian 'mixed' needs R_eval from the queries")
    eval_blocks = eval_stats.mean()
    mix = spec.mix
    if mix is None:
      dim = sum(train_stats.block_sizes)
      k = spec.eigen_k or max(1, round(dim * 1000 / 65536))
      mix = auto_mix(train_blocks, eval_blocks, k=k)
    train_blocks = [
      mix * e + (1.0 - mix) * t
      for t, e in zip(train_blocks, eval_blocks, strict=True)
    ]
  blocks = tuple(
    jnp.asarray(inverse_sqrt(b, damping=spec.damping), jnp.float32)
    for b in train_blocks
  )
  return Fitted(Preconditioner(blocks), float(mix), k)


def preconditioner_digest(preconditioner: Preconditioner) -> str:
  """A digest of R^(-1/2)'s float32 blocks; indexes record and check it."""
  digest = hashlib.sha256()
  for block in preconditioner.blocks:
    array = np.ascontiguousarray(np.asarray(block, np.float32))
    digest.update(str(array.shape).encode())
    digest.update(array.tobytes())
  return digest.hexdigest()[:16]


def apply(preconditioner: Preconditioner, phi: jax.Array) -> jax.Array:
  """G = R^(-1/2) φ blockwise: [batch, d] -> [batch, d]."""
  pieces, start = [], 0
  for block in preconditioner.blocks:
    size = block.shape[0]
    # [batch, b] @ [b, b] (symmetric) -> [batch, b]
    pieces.append(phi[:, start : start + size] @ block)
    start += size
  return jnp.concatenate(pieces, axis=-1)


HESSIAN_ARRAYS = "hessian.npz"
HESSIAN_INFO = "hessian.json"


def save(
  directory: str,
  fitted: Fitted,
  *,
  train_stats: Autocorrelation,
  eval_stats: Autocorrelation | None,
  spec: HessianSpec,
  fingerprint: dict,
) -> dict:
  """Writes R_train, R_eval, R^(-1/2) blocks and what made them.

  Returns:
    The info written to `hessian.json`.
  """
  import json
  import os

  files.makedirs(directory)
  arrays = {}
  for i, block in enumerate(fitted.preconditioner.blocks):
    arrays[f"inverse_sqrt_{i}"] = np.asarray(block)
    arrays[f"train_{i}"] = train_stats.mean()[i]
    if eval_stats is not None:
      arrays[f"eval_{i}"] = eval_stats.mean()[i]
  files.save_npz(os.path.join(directory, HESSIAN_ARRAYS), **arrays)
  info = {
    "fingerprint": fingerprint,
    "spec": dataclasses.asdict(spec),
    "mix": fitted.mix,
    "eigen_k": fitted.eigen_k,
    "block_sizes": list(train_stats.block_sizes),
    "train_examples": train_stats.count,
    "eval_examples": eval_stats.count if eval_stats else 0,
    "preconditioner_digest": preconditioner_digest(fitted.preconditioner),
  }
  with files.open(os.path.join(directory, HESSIAN_INFO), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
  return info


def load(directory: str) -> tuple[Preconditioner, dict]:
  """Reads R^(-1/2) and its info (compare `info["fingerprint"]`).

  Raises:
    FileNotFoundError: If `directory` holds no fitted Hessian.
  """
  import json
  import os

  info_path = os.path.join(directory, HESSIAN_INFO)
  if not files.exists(info_path):
    raise FileNotFoundError(f"no fitted Hessian in {directory}")
  with files.open(info_path) as f:
    info = json.load(f)
  with files.load_npz(os.path.join(directory, HESSIAN_ARRAYS)) as arrays:
    blocks = tuple(
      jnp.asarray(arrays[f"inverse_sqrt_{i}"])
      for i in range(len(info["block_sizes"]))
    )
  return Preconditioner(blocks), info
