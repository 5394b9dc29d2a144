"""Sharding, said once: the mesh, logical-to-mesh rules, sharded init.

Parameters carry logical axis names (see `trak_jax.model`). `LOGICAL_RULES`
maps them to the two mesh axes, `data` and `model`; `make_mesh` builds the
mesh; `init_sharded` initialises a pytree straight into its sharded layout
(`jax.eval_shape` -> partition specs -> jitted init with `out_shardings`).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"

# Logical axis name -> mesh axis (None: replicated).
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
  ("batch", DATA_AXIS),
  ("vocab", MODEL_AXIS),
  ("heads", MODEL_AXIS),
  ("mlp", MODEL_AXIS),
  ("embed", None),
  ("length", None),
)


def make_mesh(
  *, data: int = -1, model: int = 1, devices: Sequence[Any] | None = None
) -> Mesh:
  """Builds a (data, model) mesh.

  Args:
    data: Size of the `data` axis; -1 means the devices left over.
    model: Size of the `model` axis; -1 means the devices left over.
    devices: Devices to use; all of `jax.devices()` by default.

  Returns:
    A `Mesh` with axes (`data`, `model`).

  Raises:
    ValueError: If the sizes do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, model]
  if sizes.count(-1) > 1 or any(s < 1 and s != -1 for s in sizes):
    raise ValueError(
      "mesh axis sizes must be positive, with at most one -1; got "
      f"data={data}, model={model}"
    )
  if -1 in sizes:
    known = int(np.prod([s for s in sizes if s != -1]))
    if len(devices) % known:
      raise ValueError(
        f"{len(devices)} devices do not divide into a mesh axis of {known}"
      )
    sizes[sizes.index(-1)] = len(devices) // known
  if sizes[0] * sizes[1] != len(devices):
    raise ValueError(
      f"mesh (data={sizes[0]}, model={sizes[1]}) needs "
      f"{sizes[0] * sizes[1]} devices, found {len(devices)}"
    )
  grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def logical_shardings(
  boxed_tree: Any,
  mesh: Mesh,
  rules: Sequence[tuple[str, str | None]] = LOGICAL_RULES,
) -> Any:
  """Maps a tree of `nn.LogicallyPartitioned` leaves to `NamedSharding`s."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Sharding of a batch: leading axis over `data`, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def init_sharded(
  init_fn: Callable[..., Any],
  *args: Any,
  mesh: Mesh,
  rules: Sequence[tuple[str, str | None]] = LOGICAL_RULES,
) -> tuple[Any, Any]:
  """Initialises a boxed pytree directly in its sharded layout.

  Args:
    init_fn: Returns a pytree with `nn.LogicallyPartitioned` leaves, e.g.
      `lambda key: model.init(key, ids)["params"]`.
    *args: Arguments of `init_fn`.
    mesh: The mesh to place the result on.
    rules: Logical-to-mesh rules.

  Returns:
    (unboxed pytree of sharded arrays, matching pytree of `NamedSharding`).
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = logical_shardings(abstract, mesh, rules)
  unboxed_init = lambda *a: nn.unbox(init_fn(*a))
  values = jax.jit(unboxed_init, out_shardings=shardings)(*args)
  return values, shardings


def tree_shardings(tree: Any) -> Any:
  """The shardings of a tree of placed arrays."""
  return jax.tree.map(lambda x: x.sharding, tree)
