"""Hugging Face `config.json` -> one frozen dataclass per architecture.

`read_config` dispatches on `model_type`: "gpt2" -> `GPT2Config`,
"gpt_neox" -> `GPTNeoXConfig`, "llama", "mistral" and "qwen2" ->
`LlamaConfig` (Mistral is Llama without anything new below its sliding
window; Qwen2 is Llama with biases on the query, key and value projections).
Both spellings of the rotary settings are read: transformers 4's top-level
`rope_theta` / `rotary_pct` / `rotary_emb_base` and transformers 5's
`rope_parameters`. What the ports do not implement (scaled RoPE, GPT-2's
per-layer attention scaling, an activation other than the family's own) is a
`HFConfigError` that names the file and the field, never a silent
approximation. Imports no JAX.
"""

import dataclasses
import json
import pathlib
from typing import Any

CONFIG_FILE = "config.json"


class HFConfigError(ValueError):
  """A Hugging Face checkpoint the ports cannot read, naming file and field."""


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  """GPT-2: learned positions, pre-LayerNorm, tied head.

  Attributes:
    vocab_size: Rows of `wte` (and of the tied head).
    hidden_size: Width of the residual stream (`n_embd`).
    num_layers: Transformer blocks (`n_layer`).
    num_heads: Attention heads (`n_head`).
    intermediate_size: MLP width (`n_inner`, default 4 * hidden).
    max_positions: Rows of `wpe` (`n_positions`).
    layer_norm_epsilon: LayerNorm epsilon.
    activation: "gelu_new" (tanh approximation) or "gelu" (exact).
    dtype: Activation dtype name, "float32" or "bfloat16".
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  layer_norm_epsilon: float = 1e-5
  activation: str = "gelu_new"
  dtype: str = "float32"

  @property
  def max_len(self) -> int:
    """The longest sequence the port reads."""
    return self.max_positions


@dataclasses.dataclass(frozen=True)
class GPTNeoXConfig:
  """GPT-NeoX / Pythia: rotary on part of each head, fused QKV, untied head.

  Attributes:
    vocab_size: Rows of `embed_in` and `embed_out`.
    hidden_size: Width of the residual stream.
    num_layers: Transformer blocks.
    num_heads: Attention heads.
    intermediate_size: MLP width.
    rotary_ndims: Leading dims of each head that rotate
      (int(head_dim * rotary_pct)).
    rope_theta: Rotary base (`rotary_emb_base`).
    use_parallel_residual: x + attn(ln1(x)) + mlp(ln2(x)) when True.
    layer_norm_epsilon: LayerNorm epsilon (`layer_norm_eps`).
    attention_bias: Whether QKV and the output projection have biases.
    tie_word_embeddings: Whether the head reuses `embed_in`.
    activation: "gelu" (exact) or "gelu_new" / "gelu_fast" (tanh).
    max_positions: Longest sequence trained on (`max_position_embeddings`).
    dtype: Activation dtype name.
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  rotary_ndims: int
  rope_theta: float = 10000.0
  use_parallel_residual: bool = True
  layer_norm_epsilon: float = 1e-5
  attention_bias: bool = True
  tie_word_embeddings: bool = False
  activation: str = "gelu"
  max_positions: int = 2048
  dtype: str = "float32"

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def max_len(self) -> int:
    """The longest sequence the port reads."""
    return self.max_positions


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Llama, Mistral, Qwen2: RMSNorm, RoPE, grouped-query attention, SwiGLU.

  Attributes:
    vocab_size: Rows of `embed_tokens` and `lm_head`.
    hidden_size: Width of the residual stream.
    num_layers: Transformer blocks.
    num_heads: Query heads.
    num_kv_heads: Key/value heads; divides `num_heads`.
    head_dim: Width of one head (`head_dim`, default hidden / heads).
    intermediate_size: SwiGLU width.
    rope_theta: Rotary base.
    rms_norm_epsilon: RMSNorm epsilon.
    qkv_bias: Biases on q/k/v_proj (Llama `attention_bias`; Qwen2 always).
    output_bias: Bias on o_proj (Llama `attention_bias`; never in Qwen2).
    mlp_bias: Biases on the SwiGLU projections.
    tie_word_embeddings: Whether the head reuses `embed_tokens`.
    sliding_window: Mistral/Qwen2 attention window, None for full attention;
      longer sequences are refused (the port has no sliding window).
    model_type: "llama", "mistral" or "qwen2", as read.
    max_positions: Longest sequence trained on (`max_position_embeddings`).
    dtype: Activation dtype name.
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  rope_theta: float = 10000.0
  rms_norm_epsilon: float = 1e-6
  qkv_bias: bool = False
  output_bias: bool = False
  mlp_bias: bool = False
  tie_word_embeddings: bool = False
  sliding_window: int | None = None
  model_type: str = "llama"
  max_positions: int = 2048
  dtype: str = "float32"

  @property
  def max_len(self) -> int:
    """The longest sequence the port reads (within the sliding window)."""
    return min(self.max_positions, self.sliding_window or self.max_positions)


HFConfig = GPT2Config | GPTNeoXConfig | LlamaConfig


class _Fields:
  """Reads fields of one config.json, with errors that name file and field."""

  def __init__(self, values: dict[str, Any], path: pathlib.Path):
    self.values = values
    self.path = path

  def error(self, field: str, message: str) -> HFConfigError:
    return HFConfigError(f"{self.path}: field {field!r}: {message}")

  def get(self, field: str, default: Any = None) -> Any:
    value = self.values.get(field)
    return default if value is None else value

  def require(self, field: str) -> Any:
    if self.values.get(field) is None:
      raise self.error(field, "missing")
    return self.values[field]

  def expect(self, field: str, allowed: tuple[Any, ...], default: Any) -> Any:
    value = self.get(field, default)
    if value not in allowed:
      raise self.error(
        field, f"{value!r} is not supported (supported: {allowed})"
      )
    return value

  def rope(self, theta_field: str, theta_default: float) -> dict[str, Any]:
    """Rotary settings from `rope_parameters` (v5) or top-level fields (v4)."""
    rope = dict(self.get("rope_parameters", {}))
    scaling = self.get("rope_scaling")
    if scaling:
      rope.setdefault(
        "rope_type", scaling.get("rope_type", scaling.get("type"))
      )
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
      field = "rope_scaling" if scaling else "rope_parameters"
      raise self.error(
        field, f"rope_type {rope_type!r} is not supported (only 'default')"
      )
    rope.setdefault("rope_theta", self.get(theta_field, theta_default))
    return rope


def _gpt2(fields: _Fields, dtype: str) -> GPT2Config:
  if fields.get("scale_attn_by_inverse_layer_idx", False):
    raise fields.error("scale_attn_by_inverse_layer_idx", "True not supported")
  if not fields.get("scale_attn_weights", True):
    raise fields.error("scale_attn_weights", "False not supported")
  hidden = fields.require("n_embd")
  return GPT2Config(
    vocab_size=fields.require("vocab_size"),
    hidden_size=hidden,
    num_layers=fields.require("n_layer"),
    num_heads=fields.require("n_head"),
    intermediate_size=fields.get("n_inner", 4 * hidden),
    max_positions=fields.require("n_positions"),
    layer_norm_epsilon=fields.get("layer_norm_epsilon", 1e-5),
    activation=fields.expect(
      "activation_function", ("gelu_new", "gelu"), "gelu_new"
    ),
    dtype=dtype,
  )


def _gpt_neox(fields: _Fields, dtype: str) -> GPTNeoXConfig:
  hidden = fields.require("hidden_size")
  heads = fields.require("num_attention_heads")
  rope = fields.rope("rotary_emb_base", 10000.0)
  rotary_pct = rope.get("partial_rotary_factor", fields.get("rotary_pct", 1.0))
  return GPTNeoXConfig(
    vocab_size=fields.require("vocab_size"),
    hidden_size=hidden,
    num_layers=fields.require("num_hidden_layers"),
    num_heads=heads,
    intermediate_size=fields.require("intermediate_size"),
    rotary_ndims=int(hidden // heads * rotary_pct),
    rope_theta=float(rope["rope_theta"]),
    use_parallel_residual=fields.get("use_parallel_residual", True),
    layer_norm_epsilon=fields.get("layer_norm_eps", 1e-5),
    attention_bias=fields.get("attention_bias", True),
    tie_word_embeddings=fields.get("tie_word_embeddings", False),
    activation=fields.expect(
      "hidden_act", ("gelu", "gelu_new", "gelu_fast"), "gelu"
    ),
    max_positions=fields.get("max_position_embeddings", 2048),
    dtype=dtype,
  )


def _llama(fields: _Fields, dtype: str) -> LlamaConfig:
  model_type = fields.require("model_type")
  hidden = fields.require("hidden_size")
  heads = fields.require("num_attention_heads")
  kv_heads = fields.get("num_key_value_heads", heads)
  if heads % kv_heads:
    raise fields.error(
      "num_key_value_heads", f"{kv_heads} does not divide {heads} heads"
    )
  fields.expect("hidden_act", ("silu",), "silu")
  rope = fields.rope("rope_theta", 10000.0)
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise fields.error("rope_parameters", "partial_rotary_factor must be 1")
  attention_bias = fields.get("attention_bias", False)
  is_qwen2 = model_type == "qwen2"
  sliding = None
  if model_type == "mistral" or fields.get("use_sliding_window", False):
    sliding = fields.get("sliding_window")
  return LlamaConfig(
    vocab_size=fields.require("vocab_size"),
    hidden_size=hidden,
    num_layers=fields.require("num_hidden_layers"),
    num_heads=heads,
    num_kv_heads=kv_heads,
    head_dim=fields.get("head_dim", hidden // heads),
    intermediate_size=fields.require("intermediate_size"),
    rope_theta=float(rope["rope_theta"]),
    rms_norm_epsilon=fields.get("rms_norm_eps", 1e-6),
    qkv_bias=is_qwen2 or attention_bias,
    output_bias=not is_qwen2 and attention_bias,
    mlp_bias=fields.get("mlp_bias", False),
    tie_word_embeddings=fields.get("tie_word_embeddings", False),
    sliding_window=sliding,
    model_type=model_type,
    max_positions=fields.get("max_position_embeddings", 2048),
    dtype=dtype,
  )


_READERS = {
  "gpt2": _gpt2,
  "gpt_neox": _gpt_neox,
  "llama": _llama,
  "mistral": _llama,
  "qwen2": _llama,
}
SUPPORTED_MODEL_TYPES = tuple(_READERS)


def config_path(path: str | pathlib.Path) -> pathlib.Path:
  """`path` itself if it is a file, else `path/config.json`."""
  path = pathlib.Path(path)
  return path if path.is_file() else path / CONFIG_FILE


def read_config(
  path: str | pathlib.Path, *, dtype: str = "float32"
) -> HFConfig:
  """Reads a Hugging Face `config.json` into the port's config.

  Args:
    path: The checkpoint directory, or its `config.json`.
    dtype: Activation dtype of the port, "float32" or "bfloat16".

  Returns:
    A `GPT2Config`, `GPTNeoXConfig` or `LlamaConfig`.

  Raises:
    HFConfigError: If the file is missing or unreadable, `model_type` is not
      one of `SUPPORTED_MODEL_TYPES`, or a field asks for something the port
      does not implement.
  """
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  file = config_path(path)
  if not file.is_file():
    raise HFConfigError(f"{file}: no such file")
  try:
    values = json.loads(file.read_text())
  except json.JSONDecodeError as error:
    raise HFConfigError(f"{file}: not JSON ({error})") from error
  fields = _Fields(values, file)
  model_type = fields.get("model_type")
  if model_type not in _READERS:
    raise fields.error(
      "model_type",
      f"{model_type!r} is not supported (supported: {SUPPORTED_MODEL_TYPES})",
    )
  return _READERS[model_type](fields, dtype)
