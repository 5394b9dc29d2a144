"""GPT-2 (Hugging Face `GPT2LMHeadModel`) in Flax linen.

Learned positions, pre-LayerNorm blocks, a fused query/key/value projection
and a head tied to the token embedding (`nn.Embed.attend`). HF's `Conv1D`
stores its weight [in, out], which is already a Flax kernel, so no GPT-2
tensor is transposed. Module names follow HF's (`h_0/attn/c_attn`), so the
tensor map reads straight across.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from trak_jax.hf import layers, weights
from trak_jax.hf.config import GPT2Config

HF_PREFIX = "transformer."


class Attention(nn.Module):
  """Causal self-attention with HF's fused `c_attn`."""

  config: GPT2Config

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    width = cfg.hidden_size
    # c_attn's output is [query | key | value], each [heads * head_dim].
    # [batch, seq, hidden] -> [batch, seq, 3 * hidden]
    fused = layers.dense(
      3 * width, ("embed", "heads"), name="c_attn", dtype=dtype
    )(hidden)
    query, key, value = (
      layers.split_heads(part, cfg.num_heads)
      for part in jnp.split(fused, 3, axis=-1)
    )
    attended = layers.causal_attention(query, key, value)
    return layers.dense(width, ("heads", "embed"), name="c_proj", dtype=dtype)(
      attended
    )


class MLP(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    inner = layers.dense(
      cfg.intermediate_size, ("embed", "mlp"), name="c_fc", dtype=dtype
    )(hidden)
    inner = layers.activation(cfg.activation)(inner)
    return layers.dense(
      cfg.hidden_size, ("mlp", "embed"), name="c_proj", dtype=dtype
    )(inner)


class Block(nn.Module):
  """Pre-LayerNorm block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

  config: GPT2Config

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    eps = cfg.layer_norm_epsilon
    normed = layers.layer_norm(eps, name="ln_1", dtype=dtype)(hidden)
    hidden = hidden + Attention(cfg, name="attn")(normed)
    normed = layers.layer_norm(eps, name="ln_2", dtype=dtype)(hidden)
    return hidden + MLP(cfg, name="mlp")(normed)


class GPT2(nn.Module):
  """GPT-2 language model: token ids -> next-token logits."""

  config: GPT2Config

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
    if seq > cfg.max_positions:
      raise ValueError(
        f"sequence length {seq} exceeds n_positions={cfg.max_positions}"
      )
    wte = layers.embed(cfg.vocab_size, cfg.hidden_size, name="wte", dtype=dtype)
    wpe = layers.embed(
      cfg.max_positions,
      cfg.hidden_size,
      name="wpe",
      dtype=dtype,
      axes=("length", "embed"),
    )
    # [batch, seq, hidden] + [1, seq, hidden]
    hidden = wte(token_ids) + wpe(jnp.arange(seq)[None])
    for layer in range(cfg.num_layers):
      hidden = Block(cfg, name=f"h_{layer}")(hidden)
    hidden = layers.layer_norm(
      cfg.layer_norm_epsilon, name="ln_f", dtype=dtype
    )(hidden)
    # [batch, seq, hidden] -> [batch, seq, vocab]
    return wte.attend(hidden).astype(jnp.float32)


def tensor_mappings(
  config: GPT2Config, prefix: str = HF_PREFIX
) -> list[weights.TensorMapping]:
  """Every parameter's HF tensor name (`prefix` is "" for `GPT2Model`)."""
  found = [
    weights.embedding(f"{prefix}wte", ("wte",)),
    weights.embedding(f"{prefix}wpe", ("wpe",)),
    *weights.norm(f"{prefix}ln_f", ("ln_f",)),
  ]
  for layer in range(config.num_layers):
    hf, flax = f"{prefix}h.{layer}", f"h_{layer}"
    found += [
      *weights.norm(f"{hf}.ln_1", (flax, "ln_1")),
      *weights.conv1d(f"{hf}.attn.c_attn", (flax, "attn", "c_attn")),
      *weights.conv1d(f"{hf}.attn.c_proj", (flax, "attn", "c_proj")),
      *weights.norm(f"{hf}.ln_2", (flax, "ln_2")),
      *weights.conv1d(f"{hf}.mlp.c_fc", (flax, "mlp", "c_fc")),
      *weights.conv1d(f"{hf}.mlp.c_proj", (flax, "mlp", "c_proj")),
    ]
  return found
