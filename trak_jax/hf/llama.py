"""Llama, Mistral and Qwen2 (Hugging Face `*ForCausalLM`) in Flax linen.

RMSNorm before attention and MLP, RoPE with `rope_theta` on whole heads,
grouped-query attention (`num_key_value_heads` key/value heads, each shared
by heads / kv_heads query heads), a SwiGLU MLP (down(silu(gate(x)) * up(x)))
and a head that is tied to the embedding or not. The three families differ
only in which projections have biases (see `LlamaConfig`); Mistral's and
Qwen2's sliding window is not implemented, so longer sequences than the
window are refused. Module names follow HF's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from trak_jax.hf import layers, weights
from trak_jax.hf.config import LlamaConfig

HF_PREFIX = "model."


class Attention(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)

    def project(name: str, heads: int) -> jax.Array:
      out = layers.dense(
        heads * cfg.head_dim,
        ("embed", "heads"),
        name=name,
        dtype=dtype,
        use_bias=cfg.qkv_bias,
      )(hidden)
      # [batch, seq, heads * head_dim] -> [batch, seq, heads, head_dim]
      return layers.split_heads(out, heads)

    query = project("q_proj", cfg.num_heads)
    key = project("k_proj", cfg.num_kv_heads)
    value = project("v_proj", cfg.num_kv_heads)
    query, key = (
      layers.rotary(x, rotary_ndims=cfg.head_dim, theta=cfg.rope_theta)
      for x in (query, key)
    )
    attended = layers.causal_attention(query, key, value)
    return layers.dense(
      cfg.hidden_size,
      ("heads", "embed"),
      name="o_proj",
      dtype=dtype,
      use_bias=cfg.output_bias,
    )(attended)


class MLP(nn.Module):
  """SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x))."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)

    def dense(name: str, features: int, axes: tuple[str, str]) -> nn.Dense:
      return layers.dense(
        features, axes, name=name, dtype=dtype, use_bias=cfg.mlp_bias
      )

    width = cfg.intermediate_size
    gate = dense("gate_proj", width, ("embed", "mlp"))(hidden)
    up = dense("up_proj", width, ("embed", "mlp"))(hidden)
    return dense("down_proj", cfg.hidden_size, ("mlp", "embed"))(
      nn.silu(gate) * up
    )


class DecoderLayer(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    eps = cfg.rms_norm_epsilon
    normed = layers.rms_norm(eps, name="input_layernorm", dtype=dtype)(hidden)
    hidden = hidden + Attention(cfg, name="self_attn")(normed)
    normed = layers.rms_norm(eps, name="post_attention_layernorm", dtype=dtype)(
      hidden
    )
    return hidden + MLP(cfg, name="mlp")(normed)


class Llama(nn.Module):
  """Llama-family language model: token ids -> next-token logits."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, token_ids: jax.Array) -> jax.Array:
    """Computes logits.

    Args:
      token_ids: [batch, seq] int32, right-padded.

    Returns:
      [batch, seq, vocab] float32 logits for the next token.
    """
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    seq = token_ids.shape[1]
    if cfg.sliding_window is not None and seq > cfg.sliding_window:
      raise ValueError(
        f"sequence length {seq} exceeds sliding_window={cfg.sliding_window},"
        " which the port does not implement"
      )
    embed_tokens = layers.embed(
      cfg.vocab_size, cfg.hidden_size, name="embed_tokens", dtype=dtype
    )
    hidden = embed_tokens(token_ids)
    for layer in range(cfg.num_layers):
      hidden = DecoderLayer(cfg, name=f"layers_{layer}")(hidden)
    hidden = layers.rms_norm(cfg.rms_norm_epsilon, name="norm", dtype=dtype)(
      hidden
    )
    if cfg.tie_word_embeddings:
      logits = embed_tokens.attend(hidden)
    else:
      logits = layers.dense(
        cfg.vocab_size,
        ("embed", "vocab"),
        name="lm_head",
        dtype=dtype,
        use_bias=False,
      )(hidden)
    return logits.astype(jnp.float32)


def tensor_mappings(
  config: LlamaConfig, prefix: str = HF_PREFIX
) -> list[weights.TensorMapping]:
  """Every parameter's HF tensor name."""
  found = [
    weights.embedding(f"{prefix}embed_tokens", ("embed_tokens",)),
    *weights.norm(f"{prefix}norm", ("norm",), bias=False),
  ]
  if not config.tie_word_embeddings:
    found += weights.linear("lm_head", ("lm_head",), bias=False)
  for layer in range(config.num_layers):
    hf, flax = f"{prefix}layers.{layer}", f"layers_{layer}"
    attn = [
      (name, config.qkv_bias) for name in ("q_proj", "k_proj", "v_proj")
    ] + [("o_proj", config.output_bias)]
    found += [
      *weights.norm(
        f"{hf}.input_layernorm", (flax, "input_layernorm"), bias=False
      ),
      *weights.norm(
        f"{hf}.post_attention_layernorm",
        (flax, "post_attention_layernorm"),
        bias=False,
      ),
    ]
    for name, bias in attn:
      found += weights.linear(
        f"{hf}.self_attn.{name}", (flax, "self_attn", name), bias=bias
      )
    for name in ("gate_proj", "up_proj", "down_proj"):
      found += weights.linear(
        f"{hf}.mlp.{name}", (flax, "mlp", name), bias=config.mlp_bias
      )
  return found
