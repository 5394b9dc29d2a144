"""The projection layout: energy allocation and its record."""

import math

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
    assert all(
      k <= m for k, m in zip(block.out_shape, block.in_shape, strict=True)
    )


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
    projection_lib.ProjectionSpec(allocation="equal", dim=4096)
  )
  assert layout.dim == 4096
  assert {b.out_shape for b in layout.blocks[:-1]} == {(8, 18)}
