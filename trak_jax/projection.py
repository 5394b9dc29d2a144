"""Random projection of corrected gradients: φ = P g' (DESIGN.md section 1).

Entries of P are i.i.d. N(0, 1/k) for a k-row projection, so inner products
are preserved in expectation. Kinds:

- `none`: φ is the whole flattened gradient (exact; tiny models only);
- `dense`: per matrix parameter, one Gaussian [k_L·k_R, m·n] matrix applied to
  the flattened gradient;
- `kronecker`: per matrix parameter W (m x n), P_L (k_L x m) ∇W P_Rᵀ
  (n x k_R), computed from per-token factors as Σ_t (P_L a_t)(P_R δ_t)ᵀ.

Vector parameters (biases, LayerNorm) are concatenated and projected by one
dense Gaussian matrix (kept whole with `none`).

Matrices are never stored: each is regenerated from (seed, parameter path,
side) with JAX's counter-based threefry PRNG, so every host and every run
gets the same P.
"""

import dataclasses
import math
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp

from trak_jax import gradients

KINDS = ("none", "dense", "kronecker")
VECTORS = ("<vectors>",)  # The path under which vector parameters project.
# Biases and LayerNorm parameters are a tiny share of a model's parameters,
# but their dense [size, k] block grows with d: at d = 2^16 an uncapped
# d // 16 made it 14% of a training step's FLOPs on the demo model.
MAX_VECTOR_DIM = 1024


@dataclasses.dataclass(frozen=True)
class ProjectionSpec:
  """How gradients are projected.

  Attributes:
    kind: "none", "dense" or "kronecker".
    dim: Total output dimension d (ignored by "none"). Split as: the vector
      parameters get `vector_dim` (default min(their size, d // 16,
      `MAX_VECTOR_DIM`)); each of
      the M matrices gets k_L x k_R dims with k_L the largest power of two
      <= sqrt((d - vector_dim) / M) and k_R filling its share; what rounding
      leaves over goes to the vector block, so the total is exactly d.
    matrix_dims: Per-matrix (k_L, k_R), overriding the split of `dim` (each
      clipped to the matrix's own dims); total d then follows.
    vector_dim: Output dims of the vector parameters' block.
    seed: Seed of every projection matrix.
  """

  kind: str = "kronecker"
  dim: int = 4096
  matrix_dims: tuple[int, int] | None = None
  vector_dim: int | None = None
  seed: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"projection kind {self.kind!r} is not one of {KINDS}")


class Block(NamedTuple):
  """Where one parameter (or the vector block) lands in φ."""

  path: gradients.Path
  in_shape: tuple[int, ...]  # (m, n) of a matrix; (total size,) of vectors
  out_shape: tuple[int, ...]  # (k_L, k_R) of a matrix; (k,) of vectors
  offset: int  # first index in φ

  @property
  def size(self) -> int:
    return math.prod(self.out_shape)


class Layout(NamedTuple):
  blocks: tuple[Block, ...]  # matrices in path order, then the vector block
  vector_paths: tuple[gradients.Path, ...]  # concatenated, in this order
  dim: int  # total d


def make_layout(spec: ProjectionSpec, params) -> Layout:
  """Splits d among parameters (see `ProjectionSpec.dim`).

  Raises:
    ValueError: If d is too small to give every matrix one dimension.
  """
  flat = gradients.flat_params(params)
  matrices = sorted(gradients.matrix_paths(params))
  vector_paths = tuple(sorted(p for p in flat if p not in set(matrices)))
  vector_size = sum(flat[p].size for p in vector_paths)
  shapes = {p: tuple(flat[p].shape) for p in matrices}
  if spec.kind == "none":
    out = {p: shapes[p] for p in matrices}
    vector_dim = vector_size
  elif spec.matrix_dims is not None:
    k_left, k_right = spec.matrix_dims
    out = {p: (min(m, k_left), min(n, k_right)) for p, (m, n) in shapes.items()}
    vector_dim = spec.vector_dim or min(vector_size, 256)
  else:
    out, vector_dim = _split(spec, shapes, vector_size)
  blocks, offset = [], 0
  for path in matrices:
    blocks.append(Block(path, shapes[path], out[path], offset))
    offset += math.prod(out[path])
  if vector_paths:
    blocks.append(Block(VECTORS, (vector_size,), (vector_dim,), offset))
    offset += vector_dim
  return Layout(tuple(blocks), vector_paths, offset)


def _split(spec, shapes, vector_size):
  vector_dim = spec.vector_dim
  if vector_dim is None:
    vector_dim = min(vector_size, spec.dim // 16, MAX_VECTOR_DIM)
  budget = (spec.dim - vector_dim) // max(len(shapes), 1)
  if budget < 1:
    raise ValueError(
      f"projection dim {spec.dim} is too small for {len(shapes)} matrices "
      f"and a vector block of {vector_dim}"
    )
  k_left = 2 ** int(math.floor(math.log2(math.sqrt(budget))))
  out = {}
  for path, (m, n) in shapes.items():
    left = min(m, k_left)
    out[path] = (left, min(n, budget // left))
  used = sum(math.prod(o) for o in out.values())
  return out, spec.dim - used


def gaussian(seed: int, path: gradients.Path, side: int, shape) -> jax.Array:
  """The projection matrix of (seed, path, side): N(0, 1/shape[0]) entries."""
  key = jax.random.key(seed, impl="threefry2x32")
  key = jax.random.fold_in(key, zlib.crc32("/".join(path).encode()))
  key = jax.random.fold_in(key, side)
  return jax.random.normal(key, shape, jnp.float32) / math.sqrt(shape[0])


class Matrices(NamedTuple):
  """The projection matrices of a layout, regenerated from the seed."""

  left: dict[gradients.Path, jax.Array]  # [k_L, m] (kronecker)
  right: dict[gradients.Path, jax.Array]  # [k_R, n] (kronecker)
  dense: dict[gradients.Path, jax.Array]  # [k, size] (dense; vector block)


def make_matrices(spec: ProjectionSpec, layout: Layout) -> Matrices:
  """Regenerates the matrices that `spec` needs for `layout`."""
  left, right, dense = {}, {}, {}
  for block in layout.blocks:
    if spec.kind == "none":
      continue
    if block.path == VECTORS or spec.kind == "dense":
      shape = (block.size, math.prod(block.in_shape))
      dense[block.path] = gaussian(spec.seed, block.path, 0, shape)
    else:
      (m, n), (k_left, k_right) = block.in_shape, block.out_shape
      left[block.path] = gaussian(spec.seed, block.path, 1, (k_left, m))
      right[block.path] = gaussian(spec.seed, block.path, 2, (k_right, n))
  return Matrices(left, right, dense)


def kronecker_terms(
  terms: list[gradients.Term], p_left: jax.Array, p_right: jax.Array
) -> jax.Array:
  """Σ_terms Σ_t (P_L a_t)(P_R δ_t)ᵀ for a batch, never forming ∇W.

  Args:
    terms: Batched terms: left [batch, seq, m] or ids [batch, seq];
      right [batch, seq, n].
    p_left: [k_L, m].
    p_right: [k_R, n].

  Returns:
    [batch, k_L * k_R].
  """
  total = 0.0
  for term in terms:
    if term.is_gather:
      left = p_left.T[term.left]  # [batch, seq] ids -> [batch, seq, k_L]
    else:
      left = term.left @ p_left.T  # [batch, seq, m] -> [batch, seq, k_L]
    right = term.right @ p_right.T  # [batch, seq, n] -> [batch, seq, k_R]
    total = total + jnp.einsum("btk,btl->bkl", left, right)
  return total.reshape(total.shape[0], -1)


def project_matrix(
  spec: ProjectionSpec, block: Block, matrices: Matrices, grad: jax.Array
) -> jax.Array:
  """Projects one example's whole matrix gradient [m, n] -> [block.size]."""
  if spec.kind == "none":
    return grad.reshape(-1)
  if spec.kind == "dense":
    return matrices.dense[block.path] @ grad.reshape(-1)
  # P_L [k_L, m] @ ∇W [m, n] @ P_Rᵀ [n, k_R] -> [k_L, k_R]
  projected = matrices.left[block.path] @ grad @ matrices.right[block.path].T
  return projected.reshape(-1)


def project_vectors(
  spec: ProjectionSpec, matrices: Matrices, flat_vectors: jax.Array
) -> jax.Array:
  """Projects the concatenated vector gradients [batch, size] -> [batch, k]."""
  if spec.kind == "none":
    return flat_vectors
  return flat_vectors @ matrices.dense[VECTORS].T
