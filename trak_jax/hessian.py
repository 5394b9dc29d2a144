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
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trak_jax import files

KINDS = ("none", "train", "mixed")
SHRINKAGES = ("ledoit_wolf", "none")
EVAL_DIRECTIONS = ("shared", "all")
MAX_FULL_DIM = 16384  # A full float64 R of this d takes 2 GiB.
# The paper's λ: 0.90 on T-REx and 0.99 on C4. λ far outside this is worth a
# warning: one side's statistics then barely count.
PAPER_MIX_RANGE = (0.5, 0.999)


@dataclasses.dataclass(frozen=True)
class HessianSpec:
  """How R is built.

  Attributes:
    kind: "none", "train" (R_train only) or "mixed".
    mix: λ; None chooses it by the k-th-eigenvalue rule.
    eigen_k: k of that rule; None uses round(d * 1000 / 65536), the paper's
      k = 1000 at d = 2^16. Either way k never exceeds the rank of R_train
      or R_eval (the k-th eigenvalue past a rank is noise or zero).
    block_diagonal: One block per parameter block of the projection layout
      instead of a full d x d R; None chooses a full R only when the train
      sample has `samples_per_dim` examples per dimension of it.
    samples_per_dim: Blocks larger than (train examples / samples_per_dim)
      are split into equal diagonal sub-blocks, so every block of R_train is
      estimated from more samples than it has dimensions.
    shrinkage: "ledoit_wolf" shrinks each block of R towards its mean
      eigenvalue times the identity by the Ledoit-Wolf estimate of the
      sampling error (of the λ-mixture of the two sample autocorrelations):
      damping relative to the eigenvalues, chosen by the data. "none" uses
      the sample estimate as it is.
    damping: Added to R's eigenvalues (after any shrinkage), as a fraction of
      their mean; 0 gives the pseudo-inverse square root on R's range.
    train_sample: Corpus examples sampled for R_train; None: 4·d, at least
      8192 (the whole corpus when it is smaller).
    seed: Seed of that sample.
    eval_directions: What of R_eval enters the mixture. "shared": per
      block, only the eigen-directions whose eigenvalue exceeds the block's
      mean energy per query, tr(R_eval) / queries: directions that carry
      more than one query's share, i.e. what the queries have in common,
      which R_eval is there to down-weight. The rest are each query's own
      gradient direction; mixed in, R^(-1/2) whitens away the very signal
      that query is traced by (with a few hundred queries and k = 250, the
      top eigen-directions of R_eval span nearly every query's own).
      "all": R_eval as sampled, as the paper does.
  """

  kind: str = "mixed"
  mix: float | None = None
  eigen_k: int | None = None
  block_diagonal: bool | None = None
  samples_per_dim: float = 2.0
  shrinkage: str = "ledoit_wolf"
  damping: float = 1e-3
  train_sample: int | None = None
  seed: int = 0
  eval_directions: str = "shared"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"hessian kind {self.kind!r} is not one of {KINDS}")
    if self.mix is not None and not 0.0 <= self.mix <= 1.0:
      raise ValueError(f"hessian mix λ={self.mix} is not in [0, 1]")
    if self.shrinkage not in SHRINKAGES:
      raise ValueError(
        f"hessian shrinkage {self.shrinkage!r} is not one of {SHRINKAGES}"
      )
    if self.eval_directions not in EVAL_DIRECTIONS:
      raise ValueError(
        f"hessian eval_directions {self.eval_directions!r} is not one of "
        f"{EVAL_DIRECTIONS}"
      )
    if self.samples_per_dim <= 0:
      raise ValueError(f"samples_per_dim={self.samples_per_dim} must be > 0")

  def train_sample_size(self, dim: int) -> int:
    """The R_train sample for d = `dim` (see `train_sample`)."""
    if self.train_sample is not None:
      return self.train_sample
    return max(8192, 4 * dim)


class Preconditioner(NamedTuple):
  """R^(-1/2) as diagonal blocks (one block when R is full)."""

  blocks: tuple[jax.Array, ...]  # each [b, b] float32; sizes add up to d


class Autocorrelation:
  """Streams φ batches into float64 per-block sums of φφᵀ and of ‖φ‖⁴.

  The fourth moments give the Ledoit-Wolf estimate of the sums' sampling
  error.

  Args:
    block_sizes: Sizes of the diagonal blocks, summing to d ([d] for full).
  """

  def __init__(self, block_sizes: Sequence[int]):
    self.block_sizes = tuple(int(b) for b in block_sizes)
    self.sums = [np.zeros((b, b), np.float64) for b in self.block_sizes]
    self.fourth = np.zeros(len(self.block_sizes), np.float64)  # Σ ‖φ_b‖⁴
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
      self.fourth[block] += float(((part**2).sum(-1) ** 2).sum())
      start += size
    self.count += phi.shape[0]

  def merge(self, other: "Autocorrelation") -> "Autocorrelation":
    """Adds `other` into these sums, in place; returns self."""
    if other.block_sizes != self.block_sizes:
      raise ValueError("cannot merge autocorrelations of different blocks")
    for mine, theirs in zip(self.sums, other.sums, strict=True):
      mine += theirs
    self.fourth += other.fourth
    self.count += other.count
    return self

  def mean(self) -> list[np.ndarray]:
    """E[φφᵀ] per block, float64."""
    if not self.count:
      raise ValueError("no examples were accumulated")
    return [s / self.count for s in self.sums]

  def sampling_error(self) -> np.ndarray:
    """Per block, the estimated E‖mean − E[φφᵀ]‖_F² (Ledoit-Wolf's β²)."""
    means = self.mean()
    squared = np.array([float((m**2).sum()) for m in means])
    spread = self.fourth / self.count - squared  # E‖φφᵀ - R‖_F² per example
    return np.clip(spread, 0.0, None) / self.count


def block_sizes(
  dim: int,
  layout_sizes: Sequence[int],
  spec: HessianSpec,
  *,
  train_examples: int | None = None,
):
  """Block sizes of R: one full block, or the layout's blocks, each split so
  it has at least `spec.samples_per_dim` train examples per dimension.

  Args:
    dim: d.
    layout_sizes: The projection layout's block sizes (summing to d).
    spec: The Hessian spec.
    train_examples: Examples R_train will be estimated from (None: no
      limit from the sample).

  Raises:
    ValueError: If a full R is asked for and would be too large.
  """
  cap = None
  if train_examples is not None:
    cap = max(1, int(train_examples / spec.samples_per_dim))
  full = spec.block_diagonal is False or (
    spec.block_diagonal is None
    and dim <= MAX_FULL_DIM
    and (cap is None or dim <= cap)
  )
  if full:
    if dim > MAX_FULL_DIM:
      raise ValueError(
        f"a full R at d={dim} needs {dim * dim * 8 / 2**30:.0f} GiB in "
        "float64; set block_diagonal=True"
      )
    return [dim]
  sizes = []
  for size in layout_sizes:
    parts = 1 if cap is None else -(-size // cap)
    sizes += [size // parts + (i < size % parts) for i in range(parts)]
  return sizes


def kth_eigenvalue(blocks: Sequence[np.ndarray], k: int) -> float:
  """The k-th largest eigenvalue of a block-diagonal matrix (1-based k)."""
  return _kth(_eigenvalues(blocks), k)


def _eigenvalues(blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
  return [np.linalg.eigvalsh(b) for b in blocks]


def _kth(values: Sequence[np.ndarray], k: int) -> float:
  pooled = np.concatenate(values)
  if not 1 <= k <= pooled.size:
    raise ValueError(f"k={k} is outside 1..{pooled.size}")
  return float(np.sort(pooled)[::-1][k - 1])


def rank(blocks: Sequence[np.ndarray]) -> int:
  """Numerical rank of a block-diagonal matrix (sum over its blocks)."""
  return _rank(_eigenvalues(blocks))


def _rank(values: Sequence[np.ndarray]) -> int:
  total = 0
  for block in values:
    tolerance = max(block.max(), 0.0) * block.size * np.finfo(float).eps
    total += int((block > tolerance).sum())
  return total


def auto_mix(
  train_blocks: Sequence[np.ndarray],
  eval_blocks: Sequence[np.ndarray],
  *,
  k: int,
) -> float:
  """λ at which the k-th eigenvalues of λ R_eval and (1−λ) R_train meet,
  clipped to [0, 1]."""
  return _mix(_eigenvalues(train_blocks), _eigenvalues(eval_blocks), k)


def _mix(train_values, eval_values, k: int) -> float:
  e_train = max(_kth(train_values, k), 0.0)
  e_eval = max(_kth(eval_values, k), 0.0)
  if e_train + e_eval <= 0:
    raise ValueError(f"k-th eigenvalues are both zero (k={k})")
  return float(np.clip(e_train / (e_train + e_eval), 0.0, 1.0))


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


def shared_directions(
  blocks: Sequence[np.ndarray], count: int
) -> tuple[list[np.ndarray], int]:
  """Each block of R_eval restricted to the directions queries share.

  A direction is shared when its eigenvalue exceeds the block's mean energy
  per query, tr(block) / count: one query alone puts at most its own energy
  there, so more than that is a direction several queries have in common.

  Args:
    blocks: R_eval's diagonal blocks (sample means over `count` queries).
    count: The queries R_eval was estimated from.

  Returns:
    (the truncated blocks, the number of shared directions kept in all).
  """
  kept, total = [], 0
  for block in blocks:
    values, vectors = np.linalg.eigh(np.asarray(block, np.float64))
    shared = values > np.trace(block) / max(count, 1)
    total += int(shared.sum())
    top = vectors[:, shared]
    kept.append((top * values[shared]) @ top.T)
  return kept, total


def ledoit_wolf(matrix: np.ndarray, sampling_error: float) -> tuple:
  """Shrinks a sample autocorrelation towards μI, μ its mean eigenvalue.

  Ledoit & Wolf (2004): the weight on μI is the estimated squared sampling
  error of the estimate over its squared distance from μI, clipped to
  [0, 1].

  Returns:
    (the shrunk matrix, the weight α).
  """
  size = matrix.shape[0]
  mu = float(np.trace(matrix)) / size
  distance = float(((matrix - mu * np.eye(size)) ** 2).sum())
  alpha = (
    1.0 if distance <= 0 else float(np.clip(sampling_error / distance, 0, 1))
  )
  return (1.0 - alpha) * matrix + alpha * mu * np.eye(size), alpha


class Fitted(NamedTuple):
  preconditioner: Preconditioner
  mix: float  # the λ used (0 for "train")
  eigen_k: int | None  # k of the auto rule, if it chose λ
  diagnostics: dict  # ranks, k asked for, shrinkage per block, warnings


def _choose_mix(spec, train_blocks, eval_blocks, diagnostics):
  """λ as given, or by the k-th-eigenvalue rule with k within both ranks."""
  train_values = _eigenvalues(train_blocks)
  eval_values = _eigenvalues(eval_blocks)
  diagnostics["rank_train"] = _rank(train_values)
  diagnostics["rank_eval"] = _rank(eval_values)
  if spec.mix is not None:
    return spec.mix, None
  dim = sum(b.shape[0] for b in train_blocks)
  asked = spec.eigen_k or max(1, round(dim * 1000 / 65536))
  k = max(1, min(asked, diagnostics["rank_train"], diagnostics["rank_eval"]))
  diagnostics["eigen_k_asked"] = asked
  if k < asked:
    diagnostics["warnings"].append(
      f"eigen_k={asked} exceeds the rank of R_train "
      f"({diagnostics['rank_train']}) or R_eval ({diagnostics['rank_eval']});"
      f" used k={k}"
    )
  try:
    return _mix(train_values, eval_values, k), k
  except ValueError:
    diagnostics["warnings"].append(
      f"R_train and R_eval have no k-th eigenvalue (k={k}); used λ=0.5"
    )
    return 0.5, k


def _sample_warnings(stats: Autocorrelation, what: str) -> list[str]:
  small = [b for b in stats.block_sizes if b > stats.count]
  if not small:
    return []
  return [
    f"{what}: {len(small)} block(s) of R have more dimensions (up to "
    f"{max(small)}) than samples ({stats.count}); those directions are "
    "estimated from too few samples"
  ]


def fit(
  spec: HessianSpec,
  train_stats: Autocorrelation,
  eval_stats: Autocorrelation | None = None,
) -> Fitted:
  """R^(-1/2) from accumulated statistics, as `spec` says.

  Every departure from the paper's assumptions (k above a rank, λ far from
  0.9–0.99, a block with fewer samples than dimensions) is a warning in
  `Fitted.diagnostics` and through `warnings.warn`.

  Raises:
    ValueError: If `spec` mixes in R_eval and none is given, or kind is
      "none".
  """
  if spec.kind == "none":
    raise ValueError("hessian kind 'none' has no preconditioner")
  diagnostics = {"warnings": _sample_warnings(train_stats, "R_train")}
  train_blocks = train_stats.mean()
  errors = train_stats.sampling_error()
  mix, k = 0.0, None
  if spec.kind == "mixed":
    if eval_stats is None:
      raise ValueError("hessian 'mixed' needs R_eval from the queries")
    eval_blocks = eval_stats.mean()
    if spec.eval_directions == "shared":
      eval_blocks, shared = shared_directions(eval_blocks, eval_stats.count)
      diagnostics["eval_shared_directions"] = shared
    mix, k = _choose_mix(spec, train_blocks, eval_blocks, diagnostics)
    low, high = PAPER_MIX_RANGE
    if spec.mix is None and not low <= mix <= high:
      diagnostics["warnings"].append(
        f"λ={mix:.3g} is far from the paper's 0.9-0.99: R is mostly "
        f"{'R_train' if mix < low else 'R_eval'}"
      )
    train_blocks = [
      mix * e + (1.0 - mix) * t
      for t, e in zip(train_blocks, eval_blocks, strict=True)
    ]
    # The mixture's sampling error: the two samples are independent.
    errors = (1 - mix) ** 2 * errors + mix**2 * eval_stats.sampling_error()
  blocks, shrinkage = [], []
  for block, error in zip(train_blocks, errors, strict=True):
    if spec.shrinkage == "ledoit_wolf":
      block, alpha = ledoit_wolf(block, error)
      shrinkage.append(round(alpha, 6))
    blocks.append(
      jnp.asarray(inverse_sqrt(block, damping=spec.damping), jnp.float32)
    )
  diagnostics["shrinkage"] = shrinkage
  for message in diagnostics["warnings"]:
    warnings.warn(message, HessianWarning, stacklevel=2)
  return Fitted(Preconditioner(tuple(blocks)), float(mix), k, diagnostics)


class HessianWarning(UserWarning):
  """R was fitted outside the conditions the method assumes."""


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
  query_correction: str | None = None,
) -> dict:
  """Writes R_train, R_eval, R^(-1/2) blocks and what made them.

  hessian.npz, then hessian.json, each to a temporary name renamed onto
  its own, then, last, the `COMPLETED` marker (`files.COMPLETED`); one a
  rerun left is removed first, so a directory being rewritten is never
  taken for a finished one.

  `query_correction` is the queries' correction where it is not the
  corpus's (`encoder.query_correction_json`), recorded only then: R_eval
  was fitted from queries encoded with it.

  Returns:
    The info written to `hessian.json`.
  """
  import os

  files.makedirs(directory)
  files.remove_marker(directory)
  arrays = {}
  train_means = train_stats.mean()
  eval_means = eval_stats.mean() if eval_stats is not None else None
  for i, block in enumerate(fitted.preconditioner.blocks):
    arrays[f"inverse_sqrt_{i}"] = np.asarray(block)
    arrays[f"train_{i}"] = train_means[i]
    if eval_means is not None:
      arrays[f"eval_{i}"] = eval_means[i]
  final = os.path.join(directory, HESSIAN_ARRAYS)
  temporary = files.temporary_name(final)
  files.save_npz(temporary, **arrays)
  files.replace(temporary, final)
  info = {
    "fingerprint": fingerprint,
    "spec": dataclasses.asdict(spec),
    "mix": fitted.mix,
    "eigen_k": fitted.eigen_k,
    "block_sizes": list(train_stats.block_sizes),
    "train_examples": train_stats.count,
    "eval_examples": eval_stats.count if eval_stats else 0,
    "preconditioner_digest": preconditioner_digest(fitted.preconditioner),
    **fitted.diagnostics,
  }
  if query_correction is not None:
    info["query_correction"] = query_correction
  files.write_json(os.path.join(directory, HESSIAN_INFO), info)
  files.write_marker(directory)
  return info


def load(directory: str) -> tuple[Preconditioner, dict]:
  """Reads R^(-1/2) and its info (compare `info["fingerprint"]`).

  Raises:
    FileNotFoundError: If `directory` holds no fitted Hessian.
    files.UnfinishedError: If it has no `COMPLETED` marker: the Hessian
      job did not finish writing it.
  """
  import json
  import os

  info_path = os.path.join(directory, HESSIAN_INFO)
  if not files.exists(info_path):
    raise FileNotFoundError(f"no fitted Hessian in {directory}")
  files.check_marker(directory, job="hessian")
  with files.open(info_path) as f:
    info = json.load(f)
  with files.load_npz(os.path.join(directory, HESSIAN_ARRAYS)) as arrays:
    blocks = tuple(
      jnp.asarray(arrays[f"inverse_sqrt_{i}"])
      for i in range(len(info["block_sizes"]))
    )
  return Preconditioner(blocks), info
