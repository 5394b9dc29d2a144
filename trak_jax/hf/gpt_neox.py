"""GPT-NeoX / Pythia (Hugging Face `GPTNeoXForCausalLM`) in Flax linen.

Rotary positions on the leading `rotary_ndims` dims of each head, a parallel
residual (x + attn(ln1(x)) + mlp(ln2(x))) unless the config turns it off, a
fused `query_key_value` projection and an untied head (`embed_out`). The
fused projection's output is laid out per head, [heads, 3, head_dim] (not
[3, heads, head_dim] as GPT-2's): Megatron's layout, which keeps a head's
query, key and value together when the heads are sharded. Module names
follow HF's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from trak_jax.hf import layers, weights
from trak_jax.hf.config import GPTNeoXConfig

HF_PREFIX = "gpt_neox."


class Attention(nn.Module):
  config: GPTNeoXConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    batch, seq, width = hidden.shape
    fused = layers.dense(
      3 * width,
      ("embed", "heads"),
      name="query_key_value",
      dtype=dtype,
      use_bias=cfg.attention_bias,
    )(hidden)
    # [batch, seq, 3 * hidden] -> [batch, seq, heads, 3 * head_dim]
    per_head = fused.reshape(batch, seq, cfg.num_heads, 3 * cfg.head_dim)
    query, key, value = jnp.split(per_head, 3, axis=-1)
    query, key = (
      layers.rotary(x, rotary_ndims=cfg.rotary_ndims, theta=cfg.rope_theta)
      for x in (query, key)
    )
    attended = layers.causal_attention(query, key, value)
    return layers.dense(
      width,
      ("heads", "embed"),
      name="dense",
      dtype=dtype,
      use_bias=cfg.attention_bias,
    )(attended)


class MLP(nn.Module):
  config: GPTNeoXConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    inner = layers.dense(
      cfg.intermediate_size, ("embed", "mlp"), name="dense_h_to_4h", dtype=dtype
    )(hidden)
    inner = layers.activation(cfg.activation)(inner)
    return layers.dense(
      cfg.hidden_size, ("mlp", "embed"), name="dense_4h_to_h", dtype=dtype
    )(inner)


class Layer(nn.Module):
  config: GPTNeoXConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    eps = cfg.layer_norm_epsilon
    attn_in = layers.layer_norm(eps, name="input_layernorm", dtype=dtype)
    mlp_norm = layers.layer_norm(
      eps, name="post_attention_layernorm", dtype=dtype
    )
    attended = Attention(cfg, name="attention")(attn_in(hidden))
    mlp = MLP(cfg, name="mlp")
    if cfg.use_parallel_residual:
      return hidden + attended + mlp(mlp_norm(hidden))
    hidden = hidden + attended
    return hidden + mlp(mlp_norm(hidden))


class GPTNeoX(nn.Module):
  """GPT-NeoX language model: token ids -> next-token logits."""

  config: GPTNeoXConfig

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
    embed_in = layers.embed(
      cfg.vocab_size, cfg.hidden_size, name="embed_in", dtype=dtype
    )
    hidden = embed_in(token_ids)
    for layer in range(cfg.num_layers):
      hidden = Layer(cfg, name=f"layers_{layer}")(hidden)
    hidden = layers.layer_norm(
      cfg.layer_norm_epsilon, name="final_layer_norm", dtype=dtype
    )(hidden)
    if cfg.tie_word_embeddings:
      logits = embed_in.attend(hidden)
    else:
      logits = layers.dense(
        cfg.vocab_size,
        ("embed", "vocab"),
        name="embed_out",
        dtype=dtype,
        use_bias=False,
      )(hidden)
    return logits.astype(jnp.float32)


def tensor_mappings(
  config: GPTNeoXConfig, prefix: str = HF_PREFIX
) -> list[weights.TensorMapping]:
  """Every parameter's HF tensor name."""
  bias = config.attention_bias
  found = [
    weights.embedding(f"{prefix}embed_in", ("embed_in",)),
    *weights.norm(f"{prefix}final_layer_norm", ("final_layer_norm",)),
  ]
  if not config.tie_word_embeddings:
    found += weights.linear("embed_out", ("embed_out",), bias=False)
  for layer in range(config.num_layers):
    hf, flax = f"{prefix}layers.{layer}", f"layers_{layer}"
    found += [
      *weights.norm(f"{hf}.input_layernorm", (flax, "input_layernorm")),
      *weights.norm(
        f"{hf}.post_attention_layernorm", (flax, "post_attention_layernorm")
      ),
      *weights.linear(
        f"{hf}.attention.query_key_value",
        (flax, "attention", "query_key_value"),
        bias=bias,
      ),
      *weights.linear(
        f"{hf}.attention.dense", (flax, "attention", "dense"), bias=bias
      ),
      *weights.linear(
        f"{hf}.mlp.dense_h_to_4h", (flax, "mlp", "dense_h_to_4h"), bias=True
      ),
      *weights.linear(
        f"{hf}.mlp.dense_4h_to_h", (flax, "mlp", "dense_4h_to_h"), bias=True
      ),
    ]
  return found
