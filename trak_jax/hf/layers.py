"""Building blocks shared by the Hugging Face ports.

Every weight matrix is a plain `nn.Dense` or `nn.Embed` (never a hand-written
matmul), so one interceptor over those classes (`nn.intercept_methods`) can
see every parameterised product of a port; every parameter carries logical
axis names (`nn.with_logical_partitioning`) from `trak_jax.partitioning`'s
vocabulary ("vocab", "embed", "heads", "mlp", "length"). Parameters are
float32; `dtype` is the activation dtype.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from trak_jax import layers as base_layers

# The project's own layers. What HF checkpoints start from is irrelevant:
# the weights are loaded over it; initialisers only shape `jax.eval_shape`
# and tests of random models.
dense = base_layers.dense
embed = base_layers.embed


def layer_norm(epsilon: float, *, name: str, dtype: Any) -> nn.LayerNorm:
  """torch.nn.LayerNorm's arithmetic: two-pass variance, float32 stats."""
  return nn.LayerNorm(
    epsilon=epsilon,
    dtype=dtype,
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    name=name,
  )


def rms_norm(epsilon: float, *, name: str, dtype: Any) -> nn.RMSNorm:
  """Llama's RMSNorm: x / sqrt(mean(x²) + eps) * scale, stats in float32."""
  return nn.RMSNorm(
    epsilon=epsilon,
    dtype=dtype,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    name=name,
  )


def activation(name: str):
  """HF's activation names: "gelu" is exact, the others the tanh form."""
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
    return lambda x: nn.gelu(x, approximate=True)
  if name == "silu":
    return nn.silu
  raise ValueError(f"unsupported activation {name!r}")


def rotary(inputs: jax.Array, *, rotary_ndims: int, theta: float) -> jax.Array:
  """Rotary position embedding on the leading `rotary_ndims` of each head.

  HF's "rotate_half" layout (GPT-NeoX, Llama): dim i pairs with dim
  i + rotary_ndims / 2, frequencies theta^(-2i / rotary_ndims); the remaining
  dims pass through unchanged (GPT-NeoX's `rotary_pct` < 1).

  Args:
    inputs: [batch, seq, heads, head_dim] queries or keys at positions
      0..seq-1.
    rotary_ndims: Even number of leading dims to rotate.
    theta: The rotary base (`rope_theta`).

  Returns:
    [batch, seq, heads, head_dim], same dtype.
  """
  seq = inputs.shape[1]
  exponents = jnp.arange(0, rotary_ndims, 2, dtype=jnp.float32) / rotary_ndims
  inv_freq = 1.0 / (theta**exponents)
  # [seq, 1] * [rotary_ndims / 2] -> [seq, rotary_ndims]
  freqs = jnp.arange(seq, dtype=jnp.float32)[:, None] * inv_freq
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  # [seq, rotary_ndims] -> [1, seq, 1, rotary_ndims]
  cos = jnp.cos(angles)[None, :, None].astype(inputs.dtype)
  sin = jnp.sin(angles)[None, :, None].astype(inputs.dtype)
  rotated, passed = inputs[..., :rotary_ndims], inputs[..., rotary_ndims:]
  first, second = jnp.split(rotated, 2, axis=-1)
  half_turned = jnp.concatenate([-second, first], axis=-1)
  rotated = rotated * cos + half_turned * sin
  return jnp.concatenate([rotated, passed], axis=-1)


def causal_attention(
  query: jax.Array, key: jax.Array, value: jax.Array
) -> jax.Array:
  """Causal softmax attention; key/value heads are shared in groups (GQA).

  Args:
    query: [batch, seq, heads, head_dim].
    key: [batch, seq, kv_heads, head_dim]; kv_heads divides heads, and query
      head h reads key head h // (heads / kv_heads), as HF's `repeat_kv`.
    value: [batch, seq, kv_heads, head_dim].

  Returns:
    [batch, seq, heads * head_dim].
  """
  batch, seq, heads, head_dim = query.shape
  groups = heads // key.shape[2]
  # [batch, seq, kv_heads, head_dim] -> [batch, seq, heads, head_dim]
  key = jnp.repeat(key, groups, axis=2)
  value = jnp.repeat(value, groups, axis=2)
  scale = jnp.asarray(head_dim**-0.5, query.dtype)
  # [batch, heads, seq, seq]
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) * scale
  causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
  scores = jnp.where(causal, scores.astype(jnp.float32), -jnp.inf)
  weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
  attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
  return attended.reshape(batch, seq, heads * head_dim)


def split_heads(hidden: jax.Array, heads: int) -> jax.Array:
  """[batch, seq, heads * head_dim] -> [batch, seq, heads, head_dim]."""
  batch, seq, width = hidden.shape
  return hidden.reshape(batch, seq, heads, width // heads)
