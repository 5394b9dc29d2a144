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
  tx: optax.GradientTransformation,
  abstract_opt_state: Any,
  abstract_params: Any,
  params_shardings: Any,
  mesh: Mesh,
) -> Any:
  """The optimizer state's shardings, from the parameters' (STYLE.md).

  `optax.tree_map_params` finds every copy of the parameter tree in the
  state. A leaf there shaped like its parameter (`mu`, `nu`, Adafactor's
  unfactored `v`) is sharded like it; one of another shape (Adafactor's
  factored `v_row`/`v_col` and the placeholders beside them) is small and
  replicated, as are counts and other non-parameter fields.
  """
  replicated = partitioning.replicated(mesh)

  def like_param(leaf, param, sharding):
    return sharding if leaf.shape == param.shape else replicated

  return optax.tree_map_params(
    tx,
    like_param,
    abstract_opt_state,
    abstract_params,
    params_shardings,
    transform_non_params=lambda _: replicated,
  )


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
    tx = optimizer_lib.make_optimizer(optimizer_config)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = _opt_state_shardings(
      tx, abstract_opt, abstract_params, params_shardings, mesh
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
