"""Optimizer second-moment correction: g' = g ⊘ sqrt(V + ε).

DESIGN.md section 1, "V". The statistics come from the optax state in the
checkpoint, found by name with `optax.tree_utils`, never guessed:

- `adam`: Adam's elementwise `nu`.
- `adafactor`: Adafactor's factored `v_row`/`v_col`, V = (row ⊗ col) / mean
  (row); the correction is then a row scaling and a column scaling, which the
  Kronecker projection folds into its per-token factors. Parameters Adafactor
  did not factor (vectors, small matrices) use its elementwise `v`.
- `estimated`: V = mean squared per-example gradient over a sample, for
  checkpoints saved without optimizer state. Recorded as such in every
  fingerprint.
- `none`: no correction (Grad-Dot, Grad-Cos).

With factored V, ε is added to each factor: the row scale is
(v_row / mean(v_row) + ε)^(-1/2) and the column scale (v_col + ε)^(-1/2), so
the correction stays an exact product of the two.

`CorrectionSpec.factored` approximates an elementwise V ("adam",
"estimated") the way Adafactor keeps it: for every weight the capture sees
as a matrix [m, n] (`trak_jax.capture`; an n-D kernel as its matrix view),
v_row = mean of V over columns, v_col = mean over rows, V ≈ outer(v_row,
v_col) / mean(v_row), ε added to V first (`factored_second_moment`,
`factorize`). The Kronecker projection then folds it into the per-token
factors instead of forming each example's m x n gradient. Other parameters
(vectors, weights used another way) keep their elementwise V. The factors
are derived from the elementwise correction when an encoder is built, so an
estimated V is saved (`save_estimate`) and digested elementwise, once,
whichever form encodes with it.
"""

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from trak_jax import files, gradients

KINDS = ("none", "adam", "adafactor", "estimated")
# The kinds with an elementwise V, which `CorrectionSpec.factored` factors.
FACTORABLE = ("adam", "estimated")


class MissingOptimizerStateError(ValueError):
  """The checkpoint lacks the optimizer statistics a correction needs."""


@dataclasses.dataclass(frozen=True)
class CorrectionSpec:
  """Which second moments correct the gradients.

  Attributes:
    kind: One of "none", "adam", "adafactor", "estimated".
    epsilon: ε in g / sqrt(V + ε).
    estimate_sample: For "estimated": corpus examples V is estimated from
      (a seeded sample; the encode job draws it).
    estimate_path: For "estimated": the saved V (`save_estimate`), once
      estimated; every job that encodes loads it from here.
    estimate_digest: The digest of that V, recorded in every fingerprint
      (the path is not: a moved store keeps its meaning).
    factored: For "adam" and "estimated": approximate each captured weight
      matrix's elementwise V by its row and column means, as Adafactor
      keeps it (`factorize`), so that the Kronecker projection needs no
      per-example gradient of the matrix.
  """

  kind: str = "adafactor"
  epsilon: float = 1e-12
  estimate_sample: int = 256
  estimate_path: str | None = None
  estimate_digest: str | None = None
  factored: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"correction kind {self.kind!r} is not one of {KINDS}")
    if self.factored and self.kind not in FACTORABLE:
      has = "no V" if self.kind == "none" else "a factored V already"
      raise ValueError(
        f"correction field 'factored' approximates an elementwise V (kinds "
        f"{FACTORABLE}); kind {self.kind!r} has {has}"
      )


class Elementwise(NamedTuple):
  scale: jax.Array  # [*param_shape] (V + ε)^(-1/2)


class Factored(NamedTuple):
  rows: jax.Array  # [m] scale of each row of an [m, n] gradient
  cols: jax.Array  # [n] scale of each column


# A parameter's correction: Elementwise, Factored, or None (identity).
Correction = dict[gradients.Path, Elementwise | Factored | None]


def _single_stat(opt_state: Any, name: str, *, kind: str) -> Any:
  found = optax.tree_utils.tree_get_all_with_path(opt_state, name)
  if not found:
    raise MissingOptimizerStateError(
      f"correction '{kind}' needs the optimizer statistic '{name}', but the "
      "checkpoint's optimizer state has none (was it trained with another "
      "optimizer?). Choose the correction that matches the optimizer, or "
      "'estimated' to estimate V from a sample of gradients."
    )
  if len(found) > 1:
    paths = [jax.tree_util.keystr(path) for path, _ in found]
    raise MissingOptimizerStateError(
      f"optimizer statistic '{name}' is ambiguous: found at {paths}"
    )
  return found[0][1]


def from_adam(opt_state: Any, params: Any, *, epsilon: float) -> Correction:
  """Elementwise correction from Adam's `nu`."""
  nu = gradients.flat_params(_single_stat(opt_state, "nu", kind="adam"))
  return {
    path: Elementwise(jax.lax.rsqrt(nu[path] + epsilon))
    for path in gradients.flat_params(params)
  }


def _factored_axes(shape: tuple[int, ...]) -> tuple[int, int]:
  """optax's (d1, d0): the second largest and the largest axis."""
  order = np.argsort(shape)
  return int(order[-2]), int(order[-1])


def _factored_scale(v_row, v_col, d1: int, d0: int, *, epsilon: float):
  """(V + ε)^(-1/2) of an n-D weight from its factored statistics.

  As optax: v_row (d0 reduced) divided by its mean along d1, expanded at
  d0, times v_col (d1 reduced) expanded at d1, ε added to each factor.
  """
  reduced_d1 = d1 - 1 if d1 > d0 else d1
  rows = v_row / jnp.mean(v_row, axis=reduced_d1, keepdims=True)
  return jax.lax.rsqrt(jnp.expand_dims(rows, d0) + epsilon) * jax.lax.rsqrt(
    jnp.expand_dims(v_col, d1) + epsilon
  )


def from_adafactor(
  opt_state: Any, params: Any, *, epsilon: float
) -> Correction:
  """Factored correction from Adafactor's `v_row`/`v_col` (or its `v`)."""
  stats = {
    name: gradients.flat_params(_single_stat(opt_state, name, kind="adafactor"))
    for name in ("v_row", "v_col", "v")
  }
  correction = {}
  for path, param in gradients.flat_params(params).items():
    if stats["v"][path].shape == param.shape:  # Adafactor did not factor it.
      correction[path] = Elementwise(jax.lax.rsqrt(stats["v"][path] + epsilon))
      continue
    v_row, v_col = stats["v_row"][path], stats["v_col"][path]
    d1, d0 = _factored_axes(param.shape)
    if param.ndim != 2:
      correction[path] = Elementwise(
        _factored_scale(v_row, v_col, d1, d0, epsilon=epsilon)
      )
      continue
    correction[path] = _factored_matrix(v_row, v_col, d1, epsilon=epsilon)
  return correction


def _factored_matrix(v_row, v_col, d1: int, *, epsilon: float) -> Factored:
  """The row and column scales of a matrix from its factored statistics.

  As optax reconstructs V: the statistic along axis d1 is v_row / mean
  (v_row), the one along the other axis is v_col, ε added to each. A V of
  zeros has zero factors, not NaNs.
  """
  mean = jnp.maximum(jnp.mean(v_row), jnp.finfo(v_row.dtype).tiny)
  along_d1 = jax.lax.rsqrt(v_row / mean + epsilon)
  along_d0 = jax.lax.rsqrt(v_col + epsilon)
  if d1 == 0:
    return Factored(rows=along_d1, cols=along_d0)
  return Factored(rows=along_d0, cols=along_d1)


def factored_second_moment(
  v: jax.Array, view: tuple[int, int], *, epsilon: float
) -> Factored:
  """Adafactor's factored form of an elementwise V, as scales.

  V (any shape of `view`'s size) is seen as the matrix `view` [m, n]; with
  optax's axes (`_factored_axes`), v_row is its mean over the larger axis
  d0 and v_col its mean over d1, and V ≈ outer(v_row, v_col) / mean(v_row)
  up to the order of axes. For a matrix both means are of one V, so
  mean(v_row) = mean(v_col) = mean(V): which factor is divided by it does
  not change the product.

  ε is added to V before it is factored, as optax's Adafactor adds it to the
  squared gradients it averages. The result is (V̂ + ε)^(-1/2) up to O(ε)
  where V's row and column means are well above ε; where a row is zero (an
  embedding row no example of the sample used) its scale stays of order
  ε^(-1/2), as elementwise, instead of the ε^(-1/2) v_col^(-1/2) that ε
  added to each factor would give.

  Args:
    v: The elementwise second moment, `prod(view)` entries.
    view: The matrix (m, n) it is seen as.
    epsilon: ε.

  Returns:
    The [m] row and [n] column scales (V + ε)^(-1/2) of the approximation.
  """
  return _factor(v.reshape(view) + epsilon)


def _factor(v_plus_epsilon: jax.Array) -> Factored:
  """Row and column scales of the factored form of an [m, n] V + ε."""
  d1, d0 = _factored_axes(v_plus_epsilon.shape)
  v_row = jnp.mean(v_plus_epsilon, axis=d0)  # [shape[d1]]
  v_col = jnp.mean(v_plus_epsilon, axis=d1)  # [shape[d0]]
  return _factored_matrix(v_row, v_col, d1, epsilon=0.0)


def factorize(
  correction: Correction, views: dict[gradients.Path, tuple[int, int]]
) -> Correction:
  """`correction` with each captured matrix's elementwise V factored.

  An `Elementwise` scale s is (V + ε)^(-1/2), so s⁻² is the V + ε that
  `factored_second_moment` factors: a saved estimate (`load_estimate`)
  factors exactly as the same V estimated in this process. Parameters
  without a matrix view, and corrections that are already factored or
  none, are kept.

  Args:
    correction: Per-parameter corrections.
    views: The matrix view (m, n) of each captured weight
      (`capture.matrix_views`).

  Returns:
    The correction with `Factored` scales for every captured matrix.
  """
  factored = dict(correction)
  for path, view in views.items():
    fix = correction[path]
    if isinstance(fix, Elementwise):
      # [*param_shape] -> [m, n]
      factored[path] = _factor(1.0 / jnp.square(fix.scale.reshape(view)))
  return factored


def estimate(
  grad_batches: Iterable[tuple[Any, int]], params: Any, *, epsilon: float
) -> Correction:
  """Elementwise correction from the mean squared per-example gradient.

  Args:
    grad_batches: (per-example gradient pytree with a [batch] axis, number
      of examples it holds) pairs; rows past that number (padding) must
      have zero gradients, and are not counted.
    params: The parameters (for the structure).
    epsilon: ε.

  Returns:
    The correction.

  Raises:
    ValueError: If the sample is empty.
  """
  sums, count = None, 0
  for grads, examples in grad_batches:
    squares = jax.tree.map(lambda g: jnp.sum(jnp.square(g), axis=0), grads)
    sums = squares if sums is None else jax.tree.map(jnp.add, sums, squares)
    count += examples
  if not count:
    raise ValueError("estimating V needs at least one example")
  mean = gradients.flat_params(jax.tree.map(lambda s: s / count, sums))
  return {
    path: Elementwise(jax.lax.rsqrt(mean[path] + epsilon))
    for path in gradients.flat_params(params)
  }


class EstimateMismatchError(ValueError):
  """A saved V is not the one a spec or store recorded."""


def _estimate_arrays(correction: Correction) -> dict[str, np.ndarray]:
  arrays = {}
  for path, fix in sorted(correction.items()):
    if not isinstance(fix, Elementwise):
      raise ValueError(f"{'/'.join(path)}: only elementwise V is saved")
    arrays["/".join(path)] = np.asarray(fix.scale, np.float32)
  return arrays


def estimate_digest(correction: Correction) -> str:
  """sha256 over an estimated V's parameter paths, shapes and values."""
  digest = hashlib.sha256()
  for name, array in _estimate_arrays(correction).items():
    digest.update(f"{name}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]


def save_estimate(correction: Correction, path: str) -> str:
  """Writes an estimated V (as its (V + ε)^(-1/2)) atomically; its digest."""
  arrays = _estimate_arrays(correction)
  partial = f"{path}.partial"
  files.save_npz(partial, **arrays)
  files.replace(partial, path)
  return estimate_digest(correction)


def load_estimate(spec: CorrectionSpec, params: Any) -> Correction:
  """The V that `spec.estimate_path` holds, checked against its digest.

  Raises:
    FileNotFoundError: If the file is missing.
    EstimateMismatchError: If it is not the V `spec` recorded, or does not
      fit `params`.
  """
  path = spec.estimate_path
  with files.load_npz(path) as saved:
    arrays = {name: saved[name] for name in saved.files}
  correction = {}
  for key, param in gradients.flat_params(params).items():
    name = "/".join(key)
    if name not in arrays or arrays[name].shape != param.shape:
      raise EstimateMismatchError(
        f"{path}: the saved V has no entry of shape {param.shape} for "
        f"parameter {name}: it was estimated for another model"
      )
    correction[key] = Elementwise(jnp.asarray(arrays[name]))
  digest = estimate_digest(correction)
  if spec.estimate_digest is not None and digest != spec.estimate_digest:
    raise EstimateMismatchError(
      f"{path}: field 'estimate_digest' differs: the file holds V "
      f"{digest}, the config recorded {spec.estimate_digest}"
    )
  return correction


def identity(params: Any) -> Correction:
  return {path: None for path in gradients.flat_params(params)}


def from_checkpoint(
  spec: CorrectionSpec, opt_state: Any, params: Any
) -> Correction:
  """The correction of `spec` from a checkpoint's optimizer state.

  Raises:
    MissingOptimizerStateError: If the statistics are not in `opt_state`.
    ValueError: For `estimated`, which needs a gradient sample instead.
  """
  if spec.kind == "none":
    return identity(params)
  if spec.kind == "adam":
    return from_adam(opt_state, params, epsilon=spec.epsilon)
  if spec.kind == "adafactor":
    return from_adafactor(opt_state, params, epsilon=spec.epsilon)
  if spec.estimate_path is not None:
    return load_estimate(spec, params)
  raise ValueError(
    "correction 'estimated' has no saved V yet: estimate it with `estimate` "
    "(the encode job does, from a corpus sample) and give its path"
  )


def as_matrix(
  correction: Elementwise | Factored | None, view: tuple[int, int]
) -> Elementwise | Factored | None:
  """A weight's correction for its gradient seen as the matrix `view`."""
  if isinstance(correction, Elementwise):
    return Elementwise(correction.scale.reshape(view))
  return correction


def apply_to_gradient(
  correction: Elementwise | Factored | None, grad: jax.Array
) -> jax.Array:
  """Corrects one whole per-example gradient ([*param_shape])."""
  if correction is None:
    return grad
  if isinstance(correction, Elementwise):
    return grad * correction.scale
  return grad * correction.rows[:, None] * correction.cols[None, :]


def apply_to_term(
  correction: Factored | None, term: gradients.Term
) -> gradients.Term:
  """Folds a factored correction into a term's per-token factors.

  diag(r) (Σ_t a_t δ_tᵀ) diag(c) = Σ_t (r ⊙ a_t)(c ⊙ δ_t)ᵀ.
  """
  if correction is None:
    return term
  if term.is_gather:
    # Rows are picked by id: each token's factor is its row's scale.
    rows = correction.rows[term.left][..., None]
    return gradients.Term(term.left, term.right * correction.cols * rows)
  return gradients.Term(
    term.left * correction.rows, term.right * correction.cols
  )
