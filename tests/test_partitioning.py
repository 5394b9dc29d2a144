"""The mesh, logical-to-mesh rules and sharded initialisation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec

from tests import helpers
from trak_jax import model as model_lib
from trak_jax import partitioning


def _axis_sizes(mesh) -> dict[str, int]:
  return dict(zip(mesh.axis_names, mesh.devices.shape, strict=True))


@pytest.mark.parametrize(
  "data, model, expected",
  [
    (-1, 1, (8, 1)),
    (-1, 2, (4, 2)),
    (-1, 8, (1, 8)),
    (2, -1, (2, 4)),
    (8, -1, (8, 1)),
    (4, 2, (4, 2)),
    (1, 8, (1, 8)),
  ],
)
def test_make_mesh_sizes(data, model, expected):
  mesh = partitioning.make_mesh(data=data, model=model)
  assert mesh.axis_names == (partitioning.DATA_AXIS, partitioning.MODEL_AXIS)
  assert _axis_sizes(mesh) == {"data": expected[0], "model": expected[1]}
  # Every device appears once, in `jax.devices()` order.
  assert list(mesh.devices.flat) == jax.devices()


def test_make_mesh_defaults_and_device_subsets():
  devices = jax.devices()
  assert len(devices) == 8, "conftest sets eight fake CPU devices"
  assert _axis_sizes(partitioning.make_mesh()) == {"data": 8, "model": 1}
  one = partitioning.make_mesh(devices=devices[:1])
  assert _axis_sizes(one) == {"data": 1, "model": 1}
  four = partitioning.make_mesh(model=-1, data=1, devices=devices[4:])
  assert _axis_sizes(four) == {"data": 1, "model": 4}
  assert list(four.devices.flat) == devices[4:]


def test_make_mesh_rejects_two_unknown_axes():
  with pytest.raises(ValueError, match="-1"):
    partitioning.make_mesh(data=-1, model=-1)


@pytest.mark.parametrize(
  "data, model, phrase",
  [
    (3, 2, r"mesh \(data=3, model=2\) needs 6 devices, found 8"),
    (4, 4, r"mesh \(data=4, model=4\) needs 16 devices, found 8"),
    (2, 1, r"mesh \(data=2, model=1\) needs 2 devices, found 8"),
    (-1, 3, r"8 devices do not divide into a mesh axis of 3"),
    (5, -1, r"8 devices do not divide into a mesh axis of 5"),
  ],
)
def test_make_mesh_rejects_sizes_that_do_not_fit(data, model, phrase):
  with pytest.raises(ValueError, match=phrase):
    partitioning.make_mesh(data=data, model=model)


def _spec_from_rules(names, rules) -> PartitionSpec:
  """Brute force: each logical name looked up in the rules by hand."""
  table = dict(rules)
  return PartitionSpec(*(table[name] for name in names))


def _normalise(spec: PartitionSpec, ndim: int) -> tuple:
  return tuple(spec) + (None,) * (ndim - len(spec))


@pytest.mark.parametrize(
  "rules",
  [
    partitioning.LOGICAL_RULES,
    # Another layout: the model dimension split, MLP and vocab replicated.
    (
      ("batch", "data"),
      ("vocab", None),
      ("heads", None),
      ("mlp", None),
      ("embed", "model"),
      ("length", None),
    ),
  ],
  ids=["default", "embed_on_model"],
)
def test_init_sharded_places_arrays_by_the_logical_rules(rules):
  mesh = partitioning.make_mesh(data=4, model=2)
  model = model_lib.Transformer(helpers.TINY_MODEL)
  ids = jnp.zeros((1, 8), jnp.int32)
  init_fn = lambda key: model.init(key, ids)["params"]
  key = jax.random.key(5)
  values, shardings = partitioning.init_sharded(
    init_fn, key, mesh=mesh, rules=rules
  )
  names = traverse_util.flatten_dict(
    nn.get_partition_spec(jax.eval_shape(init_fn, key))
  )
  flat_values = traverse_util.flatten_dict(values)
  flat_shardings = traverse_util.flatten_dict(shardings)
  assert flat_values.keys() == names.keys() == flat_shardings.keys()
  expected_values = traverse_util.flatten_dict(nn.unbox(init_fn(key)))
  split = 0
  for path, value in flat_values.items():
    expected = _spec_from_rules(names[path], rules)
    assert isinstance(value.sharding, NamedSharding), path
    assert value.sharding.mesh == mesh
    assert _normalise(value.sharding.spec, value.ndim) == _normalise(
      expected, value.ndim
    ), path
    assert flat_shardings[path] == value.sharding, path
    # The placed values are the unsharded (eager) initialisation.
    np.testing.assert_allclose(
      value, expected_values[path], rtol=1e-6, atol=1e-8, err_msg=str(path)
    )
    if "model" in expected:
      split += 1
      axis = tuple(expected).index("model")
      shard = value.addressable_shards[0].data
      assert shard.shape[axis] == value.shape[axis] // 2, path
  assert split > 0  # Some parameters are split over `model`.


def test_batch_and_replicated_shardings():
  mesh = partitioning.make_mesh(data=4, model=2)
  batch = jax.device_put(
    np.arange(8 * 3).reshape(8, 3), partitioning.batch_sharding(mesh)
  )
  assert batch.sharding.spec == PartitionSpec("data", None)
  assert {s.data.shape for s in batch.addressable_shards} == {(2, 3)}
  scalar = jax.device_put(np.float32(1), partitioning.replicated(mesh))
  assert scalar.sharding.is_fully_replicated
  tree = {"a": batch, "b": [scalar]}
  assert partitioning.tree_shardings(tree) == {
    "a": batch.sharding,
    "b": [scalar.sharding],
  }
