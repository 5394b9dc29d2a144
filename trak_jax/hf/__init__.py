"""Flax ports of Hugging Face causal LMs: GPT-2, GPT-NeoX, Llama family.

`load(directory)` imports a Hugging Face checkpoint directory (`config.json`
and safetensors, sharded or not) into its Flax port; no torch is needed.
"""

from trak_jax.hf.config import (
  SUPPORTED_MODEL_TYPES,
  GPT2Config,
  GPTNeoXConfig,
  HFConfig,
  HFConfigError,
  LlamaConfig,
  read_config,
)
from trak_jax.hf.loader import (
  HFModel,
  abstract_params,
  build_module,
  load,
  load_params,
  logits,
)
from trak_jax.hf.weights import HFWeightsError, TensorSource

__all__ = [
  "SUPPORTED_MODEL_TYPES",
  "GPT2Config",
  "GPTNeoXConfig",
  "HFConfig",
  "HFConfigError",
  "HFModel",
  "HFWeightsError",
  "LlamaConfig",
  "TensorSource",
  "abstract_params",
  "build_module",
  "load",
  "load_params",
  "logits",
  "read_config",
]
