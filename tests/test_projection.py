"""The projection layout: energy allocation and its record."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from trak_jax import encoder as encoder_lib
from trak_jax import model as model_lib
from trak_jax import projection as projection_lib

DEMO_SHAPE = model_lib.ModelConfig(
  vocab_size=2048, d_model=128, num_layers=4, num_heads=4, d_ff=512
)

POSITIONS = "positions/embedding"


def layout_of(spec):
  return encoder_lib.model_layout(DEMO_SHAPE, spec)


def energies(params, weight):
  """Shares from `weight(name)`, normalised to sum to 1."""
  layout = layout_of(projection_lib.ProjectionSpec(allocation="equal"))
  names = [projection_lib.block_name(b.path) for b in layout.blocks]
  total = sum(weight(n) for n in names)
  return tuple((n, weight(n) / total) for n in names)


def test_dims_follow_the_energy_and_are_capped_by_block_size():
  params = model_lib.abstract_params(DEMO_SHAPE)
  weights = {"embed/embedding": 20.0, "block_3/wo/kernel": 10.0}
  spec = projection_lib.ProjectionSpec(
    dim=16384, block_energy=energies(params, lambda n: weights.get(n, 1.0))
  )
  layout = layout_of(spec)
  size = {projection_lib.block_name(b.path): b.size for b in layout.blocks}
  assert layout.dim <= 16384 and layout.dim > 0.97 * 16384
  # Twice the energy, about twice the dims (Kronecker rounding aside).
  ratio = size["embed/embedding"] / size["block_3/wo/kernel"]
  assert 1.6 < ratio < 2.5
  assert size["block_3/wo/kernel"] > 5 * size["block_0/wi/kernel"]
  for block in layout.blocks:
    assert block.size <= math.prod(block.in_shape)
    sides = block.sides if len(block.in_shape) == 2 else block.out_shape
    assert all(k <= m for k, m in zip(sides, block.in_shape, strict=True))


def test_a_small_block_with_much_energy_is_kept_whole():
  params = model_lib.abstract_params(DEMO_SHAPE)
  spec = projection_lib.ProjectionSpec(
    dim=65536,
    block_energy=energies(params, lambda n: 50.0 if n == POSITIONS else 1),
  )
  layout = layout_of(spec)
  (positions,) = [
    b for b in layout.blocks if b.path == tuple(POSITIONS.split("/"))
  ]
  assert positions.out_shape == positions.in_shape
  matrices = projection_lib.make_matrices(spec, layout)
  eye = matrices.left[tuple(POSITIONS.split("/"))]
  assert (eye == projection_lib.jnp.eye(eye.shape[0])).all()


def test_the_layout_is_reproducible_from_its_recorded_inputs():
  params = model_lib.abstract_params(DEMO_SHAPE)
  spec = projection_lib.ProjectionSpec(
    dim=4096, block_energy=energies(params, lambda n: len(n))
  )
  again = projection_lib.ProjectionSpec.from_dict(spec.to_dict())
  assert again == spec
  assert layout_of(again) == layout_of(spec)


def test_energy_allocation_waits_for_measured_energies():
  spec = projection_lib.ProjectionSpec(dim=4096)
  assert spec.needs_energy
  with pytest.raises(projection_lib.MissingEnergyError, match="energies"):
    layout_of(spec)
  partial = projection_lib.ProjectionSpec(
    dim=4096, block_energy=(("embed/embedding", 1.0),)
  )
  with pytest.raises(ValueError, match="no share for blocks"):
    layout_of(partial)


def test_equal_allocation_is_unchanged():
  layout = layout_of(
    projection_lib.ProjectionSpec(
      allocation="equal", dim=4096, kronecker_terms=1
    )
  )
  assert layout.dim == 4096
  assert {b.out_shape for b in layout.blocks[:-1]} == {(8, 18)}


def _one_matrix(spec, m=96, n=160):
  """The layout and matrices of a single [m, n] weight (and 8 vector dims)."""
  params = {"w": jnp.zeros((m, n)), "b": jnp.zeros(8)}
  layout = projection_lib.make_layout(spec, params, {("w",): (m, n)})
  return layout, projection_lib.make_matrices(spec, layout)


def _explicit_sketches(block, matrices, grad):
  """r separate P_L,j ∇W P_R,jᵀ from the stacked sides, in a loop."""
  left = np.asarray(matrices.left[block.path])
  right = np.asarray(matrices.right[block.path])
  k_left, k_right = block.sides
  pieces = []
  for j in range(block.terms):
    p_left = left[j * k_left : (j + 1) * k_left]
    p_right = right[j * k_right : (j + 1) * k_right]
    pieces.append((p_left @ grad @ p_right.T).reshape(-1))
  return np.concatenate(pieces)


def test_kronecker_sketches_split_a_block_and_equal_explicit_projections():
  spec = projection_lib.ProjectionSpec(
    allocation="equal", dim=1032, vector_dim=8, kronecker_terms=4
  )
  layout, matrices = _one_matrix(spec)
  block = layout.blocks[0]
  assert block.terms == 4 and block.out_shape == (4, 16, 16)
  grad = np.random.default_rng(0).standard_normal((96, 160))
  projected = projection_lib.project_matrix(
    spec, block, matrices, jnp.asarray(grad, jnp.float32)
  )
  np.testing.assert_allclose(
    projected, _explicit_sketches(block, matrices, grad), rtol=1e-4, atol=1e-4
  )


def test_kronecker_sketches_from_per_token_factors_equal_the_whole_gradient():
  spec = projection_lib.ProjectionSpec(
    allocation="equal", dim=1032, vector_dim=8, kronecker_terms=4
  )
  layout, matrices = _one_matrix(spec)
  block = layout.blocks[0]
  rng = np.random.default_rng(1)
  inputs = rng.standard_normal((2, 5, 96)).astype(np.float32)
  deltas = rng.standard_normal((2, 5, 160)).astype(np.float32)
  term = projection_lib.gradients.Term(jnp.asarray(inputs), jnp.asarray(deltas))
  from_factors = projection_lib.kronecker_terms(
    [term],
    matrices.left[block.path],
    matrices.right[block.path],
    sketches=block.terms,
  )
  for i in range(2):
    whole = inputs[i].T @ deltas[i]  # Σ_t a_t δ_tᵀ: [m, n]
    np.testing.assert_allclose(
      from_factors[i],
      _explicit_sketches(block, matrices, whole),
      rtol=1e-4,
      atol=1e-3,
    )


def test_a_block_kept_whole_stays_one_sketch():
  params = model_lib.abstract_params(DEMO_SHAPE)
  spec = projection_lib.ProjectionSpec(
    dim=65536,
    block_energy=energies(params, lambda n: 50.0 if n == POSITIONS else 1),
    kronecker_terms=4,
  )
  layout = layout_of(spec)
  for block in layout.blocks[:-1]:
    whole = "/".join(block.path) == POSITIONS
    assert block.terms == (1 if whole else 4)
    assert block.size <= math.prod(block.in_shape)


def _sketch_error(terms, queries, passages, seeds=8):
  """Mean squared error of projected cosines of [count, m, n] matrices."""
  norms = np.linalg.norm(queries.reshape(len(queries), -1), axis=1)
  norms_z = np.linalg.norm(passages.reshape(len(passages), -1), axis=1)
  exact = np.einsum("qmn,zmn->qz", queries, passages)
  errors = []
  for seed in range(seeds):
    spec = projection_lib.ProjectionSpec(
      allocation="equal",
      dim=1032,
      vector_dim=8,
      kronecker_terms=terms,
      seed=seed,
    )
    layout, matrices = _one_matrix(spec, 128, 256)
    block = layout.blocks[0]

    def project(g, spec=spec, block=block, matrices=matrices):
      return np.asarray(
        projection_lib.project_matrix(
          spec, block, matrices, jnp.asarray(g, jnp.float32)
        )
      )

    q = np.stack([project(g) for g in queries])
    z = np.stack([project(g) for g in passages])
    errors.append(((q @ z.T - exact) / np.outer(norms, norms_z)) ** 2)
  return float(np.mean(errors))


def test_independent_sketches_cut_the_error_of_gradients_sharing_directions():
  # Rank-3 gradients around one shared input and output direction, as a
  # layer's per-example gradients are: one two-sided sketch's first-order
  # error terms then dominate, and r sketches average them down.
  rng = np.random.default_rng(0)
  shared_in, shared_out = rng.standard_normal(128), rng.standard_normal(256)

  def gradient():
    inputs = 0.5 * rng.standard_normal((3, 128)) + shared_in
    outputs = 0.5 * rng.standard_normal((3, 256)) + shared_out
    return inputs.T @ outputs

  queries = np.stack([gradient() for _ in range(12)])
  passages = np.stack([gradient() for _ in range(12)])
  one = _sketch_error(1, queries, passages)
  sixteen = _sketch_error(16, queries, passages)
  assert sixteen < 0.6 * one
