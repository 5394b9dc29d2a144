"""A Hugging Face checkpoint directory -> (config, Flax module, parameters).

`load(directory)` reads `config.json` (`trak_jax.hf.config`), builds the port
of its architecture, and fills the port's parameter tree from the
safetensors files (`trak_jax.hf.weights`), checked against the shapes the
port expects (`jax.eval_shape`, so nothing is initialised). `logits` runs
the port.
"""

import functools
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trak_jax.hf import gpt2, gpt_neox, llama, weights
from trak_jax.hf.config import (
  GPT2Config,
  GPTNeoXConfig,
  HFConfig,
  LlamaConfig,
  read_config,
)


class Architecture(NamedTuple):
  module: type[nn.Module]  # the Flax port, built from the config
  # (config, prefix) -> every parameter's HF tensor name
  tensor_mappings: Callable[[Any, str], list[weights.TensorMapping]]
  hf_prefix: str  # the base model's prefix in `*ForCausalLM` checkpoints


ARCHITECTURES: dict[type, Architecture] = {
  GPT2Config: Architecture(gpt2.GPT2, gpt2.tensor_mappings, gpt2.HF_PREFIX),
  GPTNeoXConfig: Architecture(
    gpt_neox.GPTNeoX, gpt_neox.tensor_mappings, gpt_neox.HF_PREFIX
  ),
  LlamaConfig: Architecture(
    llama.Llama, llama.tensor_mappings, llama.HF_PREFIX
  ),
}


class HFModel(NamedTuple):
  config: HFConfig  # the port's config, read from config.json
  module: nn.Module  # the Flax port
  params: dict[str, Any]  # its `params` collection: float32 numpy arrays


def build_module(config: HFConfig) -> nn.Module:
  """The Flax port for `config`."""
  return ARCHITECTURES[type(config)].module(config)


def abstract_params(config: HFConfig) -> dict[str, Any]:
  """The port's parameters (unboxed) as `jax.ShapeDtypeStruct`s."""
  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  boxed = jax.eval_shape(build_module(config).init, jax.random.key(0), ids)
  return nn.unbox(boxed["params"])


def _prefix(source: weights.TensorSource, prefix: str) -> str:
  """`prefix` if the checkpoint is a `*ForCausalLM`, "" for a bare model."""
  names = source.names()
  return prefix if any(n.startswith(prefix) for n in names) else ""


def load_params(
  directory: str | pathlib.Path, config: HFConfig
) -> dict[str, Any]:
  """Reads the parameters of the port of `config` from a checkpoint.

  Args:
    directory: The checkpoint directory (`model.safetensors`, or shards and
      `model.safetensors.index.json`).
    config: The port's config, usually `read_config(directory)`.

  Returns:
    The `params` collection, float32 numpy arrays.

  Raises:
    HFWeightsError: A tensor or shard is missing, or a shape does not match
      the config; the message names the file and the tensor.
  """
  architecture = ARCHITECTURES[type(config)]
  source = weights.TensorSource(directory)
  mappings = architecture.tensor_mappings(
    config, _prefix(source, architecture.hf_prefix)
  )
  return weights.load_params(source, mappings, abstract_params(config))


def load(directory: str | pathlib.Path, *, dtype: str = "float32") -> HFModel:
  """Imports a Hugging Face checkpoint directory into its Flax port.

  Args:
    directory: Holds `config.json` and the safetensors file(s).
    dtype: Activation dtype, "float32" or "bfloat16" (parameters stay
      float32).

  Returns:
    The config, the module and its parameters.

  Raises:
    HFConfigError: config.json names an unsupported architecture or option.
    HFWeightsError: The tensors do not match the config.
  """
  config = read_config(directory, dtype=dtype)
  return HFModel(config, build_module(config), load_params(directory, config))


@functools.lru_cache(maxsize=16)
def _jitted_apply(config: HFConfig) -> Callable[..., jax.Array]:
  return jax.jit(build_module(config).apply)


def logits(
  model_config: HFConfig, params: dict[str, Any], token_ids: Any
) -> np.ndarray:
  """Next-token logits of the port.

  Args:
    model_config: The port's config.
    params: Its `params` collection.
    token_ids: [batch, seq] int token ids, right-padded.

  Returns:
    [batch, seq, vocab] float32 numpy logits.
  """
  ids = jnp.asarray(token_ids, jnp.int32)
  out = _jitted_apply(model_config)({"params": params}, ids)
  return np.asarray(out, np.float32)
