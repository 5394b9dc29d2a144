"""Random projection of corrected gradients: φ = P g' (DESIGN.md section 1).

Entries of P are i.i.d. N(0, 1/k) for a k-row projection, so inner products
are preserved in expectation. Kinds:

- `none`: φ is the whole flattened gradient (exact; tiny models only);
- `dense`: per matrix parameter, one Gaussian [k_L·k_R, m·n] matrix applied to
  the flattened gradient;
- `kronecker`: per matrix parameter W (m x n), P_L (k_L x m) ∇W P_Rᵀ
  (n x k_R), computed from per-token factors as Σ_t (P_L a_t)(P_R δ_t)ᵀ;
  by default r = 4 independent such sketches per matrix, concatenated
  (`ProjectionSpec.kronecker_terms`), which halves the error terms that one
  two-sided sketch adds to a dense projection's.

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


ALLOCATIONS = ("energy", "equal")


class MissingEnergyError(ValueError):
  """An energy-allocated layout was asked for before energies were measured."""


@dataclasses.dataclass(frozen=True)
class ProjectionSpec:
  """How gradients are projected.

  Attributes:
    kind: "none", "dense" or "kronecker".
    dim: Total output dimension d (ignored by "none").
    allocation: How d is split among the parameter blocks (the matrices and
      the vector block):
      - "energy": block b gets d · e_b dims, e_b its mean share of the
        corrected gradient's squared norm, measured on a sample of the corpus
        (`block_energy`). For unit-normalised encodings the error variance
        of a projected inner product is Σ_b e_b² / k_b, which this split
        minimises under Σ_b k_b = d. A block never gets more dims than it
        has parameters; a Kronecker side whose dims reach the matrix's own
        is the identity, so small blocks are kept exactly.
      - "equal": the vector parameters get `vector_dim` (default min(their
        size, d // 16, `MAX_VECTOR_DIM`)); each of the M matrices gets
        k_L x k_R dims with k_L the largest power of two <= sqrt((d -
        vector_dim) / M) and k_R filling its share; what rounding leaves
        over goes to the vector block, so the total is exactly d.
    block_energy: The measured shares e_b as (block name, share) pairs, block
      names "/"-joined parameter paths and "<vectors>"; None until measured
      (`trak_jax.encoder.measure_block_energy`). Recorded in every
      fingerprint, so the layout is reproducible from it.
    energy_sample: Corpus examples the energies are measured on.
    matrix_dims: Per-matrix (k_L, k_R), overriding `allocation` (each
      clipped to the matrix's own dims); total d then follows.
    vector_dim: Output dims of the vector parameters' block.
    kronecker_terms: r, independent Kronecker sketches per matrix (with the
      "energy" and "equal" allocations): a block of k dims is r sketches of
      k / r dims each, P_L,j ∇W P_R,jᵀ / sqrt(r), concatenated. One
      two-sided sketch's error has first-order terms ∝ 1/k_L + 1/k_R beside
      a dense sketch's 1/(k_L k_R) (they dominate when examples' gradients
      share directions, as they do); r sketches with sides sqrt(r) smaller
      average them down by sqrt(r), for sqrt(r) times the side projections'
      FLOPs. A block whose single sketch keeps a side whole (the identity)
      stays one sketch. Recorded layouts without this field are r = 1.
    seed: Seed of every projection matrix.
  """

  kind: str = "kronecker"
  dim: int = 16384
  allocation: str = "energy"
  block_energy: tuple[tuple[str, float], ...] | None = None
  energy_sample: int = 256
  matrix_dims: tuple[int, int] | None = None
  vector_dim: int | None = None
  kronecker_terms: int = 4
  seed: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"projection kind {self.kind!r} is not one of {KINDS}")
    if self.allocation not in ALLOCATIONS:
      raise ValueError(
        f"projection allocation {self.allocation!r} is not one of {ALLOCATIONS}"
      )
    if self.kronecker_terms < 1:
      raise ValueError(f"kronecker_terms={self.kronecker_terms} must be >= 1")

  @property
  def needs_energy(self) -> bool:
    """Whether the layout waits for measured block energies."""
    return (
      self.kind != "none"
      and self.matrix_dims is None
      and self.allocation == "energy"
      and self.block_energy is None
    )

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> "ProjectionSpec":
    """Inverse of `to_dict` (JSON turns tuples into lists)."""
    values = dict(values)
    values.setdefault("kronecker_terms", 1)  # Layouts recorded before it.
    if values.get("matrix_dims") is not None:
      values["matrix_dims"] = tuple(values["matrix_dims"])
    if values.get("block_energy") is not None:
      values["block_energy"] = tuple(
        (str(name), float(share)) for name, share in values["block_energy"]
      )
    return cls(**values)


class ParamBlock(NamedTuple):
  """Where one parameter (or the vector block) lands in φ.

  A block of the projection layout, not the transformer's `model.Block`.
  """

  path: gradients.Path
  in_shape: tuple[int, ...]  # (m, n) of a matrix; (total size,) of vectors
  # (k_L, k_R) of a matrix, (r, k_L, k_R) of r Kronecker sketches; (k,) of
  # the vectors.
  out_shape: tuple[int, ...]
  offset: int  # first index in φ

  @property
  def size(self) -> int:
    return math.prod(self.out_shape)

  @property
  def terms(self) -> int:
    """r, the independent Kronecker sketches of a matrix block."""
    return self.out_shape[0] if len(self.out_shape) == 3 else 1

  @property
  def sides(self) -> tuple[int, int]:
    """(k_L, k_R) of each Kronecker sketch of a matrix block."""
    return tuple(self.out_shape[-2:])


class Layout(NamedTuple):
  blocks: tuple[
    ParamBlock, ...
  ]  # matrices in path order, then the vector block
  vector_paths: tuple[gradients.Path, ...]  # concatenated, in this order
  dim: int  # total d


def block_name(path: gradients.Path) -> str:
  """The name of a block in `ProjectionSpec.block_energy`."""
  return "/".join(path)


def make_layout(
  spec: ProjectionSpec, params, views: dict[gradients.Path, tuple[int, int]]
) -> Layout:
  """Splits d among parameters (see `ProjectionSpec.allocation`).

  Args:
    spec: The projection.
    params: The parameters (arrays or shapes).
    views: The weights whose gradients come as per-token factors, each as a
      matrix (m, n) (`trak_jax.capture.matrix_views`); every other
      parameter joins the vector block.

  Raises:
    ValueError: If d is too small to give every matrix one dimension.
    MissingEnergyError: If the allocation needs energies not yet measured.
  """
  flat = gradients.flat_params(params)
  matrices = sorted(views)
  vector_paths = tuple(sorted(p for p in flat if p not in views))
  vector_size = sum(math.prod(flat[p].shape) for p in vector_paths)
  shapes = {p: tuple(views[p]) for p in matrices}
  if spec.kind == "none":
    out = {p: shapes[p] for p in matrices}
    vector_dim = vector_size
  elif spec.matrix_dims is not None:
    k_left, k_right = spec.matrix_dims
    out = {p: (min(m, k_left), min(n, k_right)) for p, (m, n) in shapes.items()}
    vector_dim = spec.vector_dim or min(vector_size, 256)
  elif spec.allocation == "energy":
    out, vector_dim = _energy_split(spec, shapes, vector_size)
  else:
    out, vector_dim = _split(spec, shapes, vector_size)
  blocks, offset = [], 0
  for path in matrices:
    blocks.append(ParamBlock(path, shapes[path], out[path], offset))
    offset += math.prod(out[path])
  if vector_paths:
    blocks.append(ParamBlock(VECTORS, (vector_size,), (vector_dim,), offset))
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
    out[path] = _sketches(spec, (left, min(n, budget // left)), (m, n))
  used = sum(math.prod(o) for o in out.values())
  return out, spec.dim - used


def _energy_split(spec, shapes, vector_size):
  """Dims ∝ measured energy, capped by each block's size (water-filling)."""
  if spec.block_energy is None:
    raise MissingEnergyError(
      "projection allocation 'energy' needs the blocks' measured energies "
      "(trak_jax.encoder.block_shares and with_block_energy; the encode job "
      "measures them and records them in the store's manifest)"
    )
  energy = dict(spec.block_energy)
  names = [block_name(p) for p in shapes]
  if vector_size:
    names.append(block_name(VECTORS))
  missing = [n for n in names if n not in energy]
  if missing:
    raise ValueError(f"block_energy has no share for blocks {missing}")
  caps = {block_name(p): m * n for p, (m, n) in shapes.items()}
  if vector_size:
    caps[block_name(VECTORS)] = min(vector_size, MAX_VECTOR_DIM)
  if spec.dim < len(names):
    raise ValueError(
      f"projection dim {spec.dim} is too small for {len(names)} blocks"
    )
  target = _water_fill({n: max(energy[n], 0.0) for n in names}, caps, spec.dim)
  out = {
    path: _sketches(
      spec, _kronecker_split(target[block_name(path)], m, n), (m, n)
    )
    for path, (m, n) in shapes.items()
  }
  used = sum(math.prod(o) for o in out.values())
  vector_dim = 0
  if vector_size:
    vector_dim = max(1, min(caps[block_name(VECTORS)], spec.dim - used))
  return out, vector_dim


def _water_fill(energy, caps, dim):
  """Real-valued dims ∝ energy summing to `dim`, none above its cap."""
  dims, free = {}, dict(energy)
  budget = float(dim)
  while free:
    total = sum(free.values())
    share = {
      n: (budget * e / total if total > 0 else budget / len(free))
      for n, e in free.items()
    }
    over = [n for n in free if share[n] >= caps[n]]
    if not over:
      dims.update(share)
      break
    for n in over:
      dims[n] = float(caps[n])
      budget -= caps[n]
      del free[n]
  return {n: max(1, int(dims[n])) for n in energy}


def _kronecker_split(k: int, m: int, n: int) -> tuple[int, int]:
  """k_L x k_R <= k with the two sides as equal as m and n allow."""
  k = max(1, min(k, m * n))
  left = max(1, min(m, round(math.sqrt(k))))
  right = max(1, min(n, k // left))
  left = max(1, min(m, k // right))
  return left, right


def _sketches(spec, sides, shape):
  """A matrix's out_shape: its Kronecker sides, split into r sketches."""
  if spec.kind != "kronecker":
    return sides
  return _with_terms(sides, shape, spec.kronecker_terms)


def _with_terms(
  sides: tuple[int, int], shape: tuple[int, int], terms: int
) -> tuple[int, ...]:
  """(k_L, k_R), or (r, k_L', k_R') with r k_L' k_R' <= k_L k_R."""
  (k_left, k_right), (m, n) = sides, shape
  terms = min(terms, k_left * k_right)
  if terms == 1 or k_left >= m or k_right >= n:
    return sides
  left, right = _kronecker_split(k_left * k_right // terms, m, n)
  if left >= m or right >= n:
    return sides
  return (terms, left, right)


def gaussian(seed: int, path: gradients.Path, side: int, shape) -> jax.Array:
  """The projection matrix of (seed, path, side): N(0, 1/shape[0]) entries.

  A square matrix (as many dims out as in: a Kronecker side that reaches
  the matrix's own dim, a block kept whole) is the identity, which keeps
  that side exactly.
  """
  if shape[0] == shape[1]:
    return jnp.eye(shape[0], dtype=jnp.float32)
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
    elif block.terms == 1:
      (m, n), (k_left, k_right) = block.in_shape, block.sides
      left[block.path] = gaussian(spec.seed, block.path, 1, (k_left, m))
      right[block.path] = gaussian(spec.seed, block.path, 2, (k_right, n))
    else:
      left[block.path], right[block.path] = _term_sides(spec.seed, block)
  return Matrices(left, right, dense)


def _term_sides(seed: int, block: ParamBlock) -> tuple[jax.Array, jax.Array]:
  """The r sketches' sides, stacked: [r·k_L, m] and [r·k_R, n].

  Sketch j's sides have N(0, 1/k_L) and N(0, 1/k_R) entries; the left is
  scaled by 1/sqrt(r) so the r concatenated sketches' inner products add up
  to one unbiased estimate.
  """
  (m, n), (k_left, k_right), terms = block.in_shape, block.sides, block.terms
  key = jax.random.key(seed, impl="threefry2x32")
  key = jax.random.fold_in(key, zlib.crc32("/".join(block.path).encode()))
  key = jax.random.fold_in(key, 3)  # Sides 1 and 2 are the single sketch's.
  left_key, right_key = jax.random.split(key)
  left = jax.random.normal(left_key, (terms * k_left, m), jnp.float32)
  right = jax.random.normal(right_key, (terms * k_right, n), jnp.float32)
  return left / math.sqrt(terms * k_left), right / math.sqrt(k_right)


def kronecker_terms(
  terms: list[gradients.Term],
  p_left: jax.Array,
  p_right: jax.Array,
  *,
  sketches: int = 1,
) -> jax.Array:
  """Σ_terms Σ_t (P_L a_t)(P_R δ_t)ᵀ for a batch, never forming ∇W.

  Args:
    terms: Batched terms: left [batch, seq, m] or ids [batch, seq];
      right [batch, seq, n].
    p_left: [r·k_L, m], r = `sketches` stacked left sides.
    p_right: [r·k_R, n].
    sketches: r, independent sketches (`ProjectionSpec.kronecker_terms`).

  Returns:
    [batch, r * k_L * k_R].
  """
  total = 0.0
  for term in terms:
    if term.is_gather:
      left = p_left.T[term.left]  # [batch, seq] ids -> [batch, seq, r·k_L]
    else:
      left = term.left @ p_left.T  # [batch, seq, m] -> [batch, seq, r·k_L]
    right = term.right @ p_right.T  # [batch, seq, n] -> [batch, seq, r·k_R]
    left = left.reshape(*left.shape[:2], sketches, -1)
    right = right.reshape(*right.shape[:2], sketches, -1)
    total = total + jnp.einsum("btrk,btrl->brkl", left, right)
  return total.reshape(total.shape[0], -1)


def project_matrix(
  spec: ProjectionSpec, block: ParamBlock, matrices: Matrices, grad: jax.Array
) -> jax.Array:
  """Projects one example's whole matrix gradient [m, n] -> [block.size]."""
  if spec.kind == "none":
    return grad.reshape(-1)
  if spec.kind == "dense":
    return matrices.dense[block.path] @ grad.reshape(-1)
  # Per sketch, P_L [k_L, m] @ ∇W [m, n] @ P_Rᵀ [n, k_R] -> [k_L, k_R]
  left = (matrices.left[block.path] @ grad).reshape(
    block.terms, -1, grad.shape[1]
  )
  right = matrices.right[block.path].reshape(block.terms, -1, grad.shape[1])
  return jnp.einsum("rkn,rln->rkl", left, right).reshape(-1)


def project_vectors(
  spec: ProjectionSpec, matrices: Matrices, flat_vectors: jax.Array
) -> jax.Array:
  """Projects the concatenated vector gradients [batch, size] -> [batch, k]."""
  if spec.kind == "none":
    return flat_vectors
  return flat_vectors @ matrices.dense[VECTORS].T
