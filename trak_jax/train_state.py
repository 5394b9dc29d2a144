"""The training state and its layout on the mesh, computing nothing.

Below both `checkpoint` (which restores a `TrainState` straight into its
sharded layout) and `train` (which builds and updates one), so neither
imports the other, as t5x keeps `train_state.py` below its checkpointer and
trainer.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from trak_jax import models, partitioning
from trak_jax import optimizer as optimizer_lib


class TrainState(NamedTuple):
  step: jax.Array  # [] int32, number of updates applied
  params: Any  # pytree of the model's parameters
  opt_state: optax.OptState  # the optimizer's whole state


def _opt_state_shardings(
  abstract_opt_state: Any, abstract_params: Any, params_shardings: Any, mesh
) -> Any:
  """Optimizer leaves shaped like a parameter share its sharding.

  Moments that mirror a parameter (`mu`, `nu`, unfactored `v`) are sharded
  like it; factored statistics and counters are small and replicated.
  """
  keystr = jax.tree_util.keystr
  by_path = {
    keystr(path): (leaf.shape, sharding)
    for (path, leaf), sharding in zip(
      jax.tree_util.tree_leaves_with_path(abstract_params),
      jax.tree.leaves(params_shardings),
      strict=True,
    )
  }

  def choose(path, leaf):
    key = keystr(path)
    for param_key, (shape, sharding) in by_path.items():
      if key.endswith(param_key) and shape == leaf.shape:
        return sharding
    return partitioning.replicated(mesh)

  return jax.tree_util.tree_map_with_path(choose, abstract_opt_state)


def abstract_state_and_shardings(
  model_config: models.ModelConfig,
  optimizer_config: optimizer_lib.OptimizerConfig | None,
  mesh: Mesh,
) -> tuple[TrainState, TrainState]:
  """(abstract `TrainState`, `TrainState` of shardings), computing nothing.

  Any model of `trak_jax.models`; without an optimizer (an imported
  checkpoint that came without its state) `opt_state` is None.
  """
  boxed = jax.eval_shape(models.boxed_init_fn(model_config), jax.random.key(0))
  params_shardings = partitioning.logical_shardings(boxed, mesh)
  abstract_params = nn.unbox(boxed)
  abstract_opt = opt_shardings = None
  if optimizer_config is not None:
    abstract_opt = jax.eval_shape(
      optimizer_lib.make_optimizer(optimizer_config).init, abstract_params
    )
    opt_shardings = _opt_state_shardings(
      abstract_opt, abstract_params, params_shardings, mesh
    )
  abstract = TrainState(
    step=jax.ShapeDtypeStruct((), jnp.int32),
    params=abstract_params,
    opt_state=abstract_opt,
  )
  shardings = TrainState(
    step=partitioning.replicated(mesh),
    params=params_shardings,
    opt_state=opt_shardings,
  )
  return abstract, shardings


def abstract_train_state(
  model_config: models.ModelConfig,
  optimizer_config: optimizer_lib.OptimizerConfig | None,
  mesh: Mesh,
) -> TrainState:
  """Shapes, dtypes and shardings of a `TrainState`, computing nothing."""
  state, shardings = abstract_state_and_shardings(
    model_config, optimizer_config, mesh
  )
  return jax.tree.map(
    lambda leaf, sharding: jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype, sharding=sharding
    ),
    state,
    shardings,
  )
