"""The models a checkpoint can hold, behind one set of functions.

A model config is the project's `trak_jax.model.ModelConfig` or the config
of a Hugging Face port (`trak_jax.hf`: GPT-2, GPT-NeoX, Llama family). Every
job reaches the model through these functions, so an imported checkpoint
runs through the same encoder, Hessian, retrieval and evaluation as one that
`trak-jax-train` wrote. Each config has `max_len`, the longest sequence the
model reads.

A config is saved in the checkpoint's metadata as a dict: the project's
config as its fields (as it always was), a port's with an `architecture`
key naming its config class.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from trak_jax import model as model_lib
from trak_jax import partitioning
from trak_jax.hf import config as hf_config
from trak_jax.hf import loader as hf_loader

ModelConfig = model_lib.ModelConfig | hf_config.HFConfig

ARCHITECTURE_KEY = "architecture"
_HF_CONFIGS = {
  cls.__name__: cls
  for cls in (
    hf_config.GPT2Config,
    hf_config.GPTNeoXConfig,
    hf_config.LlamaConfig,
  )
}


def build_module(config: ModelConfig) -> nn.Module:
  """The Flax module of `config`."""
  if isinstance(config, model_lib.ModelConfig):
    return model_lib.Transformer(config)
  return hf_loader.build_module(config)


def apply_fn(config: ModelConfig):
  """(params, token_ids [batch, seq]) -> float32 logits, for `config`."""
  module = build_module(config)

  def apply(params, token_ids):
    return module.apply({"params": params}, token_ids).astype(jnp.float32)

  return apply


def boxed_init_fn(config: ModelConfig):
  """key -> the `params` collection with its logical axis boxes."""
  module = build_module(config)

  def init(key):
    ids = jnp.zeros((1, min(config.max_len, 8)), jnp.int32)
    return module.init(key, ids)["params"]

  return init


def abstract_params(config: ModelConfig) -> Any:
  """Shapes and dtypes of the parameters (unboxed), computing nothing."""
  return nn.unbox(jax.eval_shape(boxed_init_fn(config), jax.random.key(0)))


def param_shardings(config: ModelConfig, mesh: Mesh) -> Any:
  """The `NamedSharding` of every parameter on `mesh`, from its axis names."""
  boxed = jax.eval_shape(boxed_init_fn(config), jax.random.key(0))
  return partitioning.logical_shardings(boxed, mesh)


def is_imported(config: ModelConfig) -> bool:
  """Whether `config` is a Hugging Face port's."""
  return not isinstance(config, model_lib.ModelConfig)


def to_dict(config: ModelConfig) -> dict[str, Any]:
  """The config as saved in a checkpoint's metadata."""
  values = dataclasses.asdict(config)
  if is_imported(config):
    values[ARCHITECTURE_KEY] = type(config).__name__
  return values


def from_dict(values: dict[str, Any]) -> ModelConfig:
  """Reads a config saved by `to_dict`.

  Raises:
    ValueError: If the dict names an architecture the project has no port
      of.
  """
  values = dict(values)
  name = values.pop(ARCHITECTURE_KEY, None)
  if name is None:
    return model_lib.ModelConfig.from_dict(values)
  if name not in _HF_CONFIGS:
    raise ValueError(
      f"model_config: architecture {name!r} is not one of {sorted(_HF_CONFIGS)}"
    )
  return _HF_CONFIGS[name](**values)


@functools.lru_cache(maxsize=16)
def _jitted_apply(config: ModelConfig):
  return jax.jit(apply_fn(config))


def logits(checkpoint: Any, token_ids: Any) -> np.ndarray:
  """Next-token logits of a loaded checkpoint's model.

  Args:
    checkpoint: A `trak_jax.checkpoint.Checkpoint` (`load_checkpoint`).
    token_ids: [batch, seq] int token ids.

  Returns:
    [batch, seq, vocab] float32 numpy logits.
  """
  ids = jnp.asarray(token_ids, jnp.int32)
  return np.asarray(
    _jitted_apply(checkpoint.model_config)(checkpoint.params, ids), np.float32
  )
