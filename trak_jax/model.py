"""A GPT-2 family decoder-only transformer with logical axis names.

Learned positions, pre-LayerNorm blocks, GELU MLP and tied input/output
embeddings. Every parameter carries logical axis names
(`nn.with_logical_partitioning`), which `trak_jax.partitioning` maps to mesh
axes.

Every weight matrix is an `nn.Dense` or `nn.Embed` (tied: its `attend` gives
the logits), so `trak_jax.capture` finds the per-token factors of their
gradients from outside, as it does for any Flax model.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from trak_jax import layers


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape of the transformer.

  Attributes:
    vocab_size: Number of tokens, including pad (0), unk, bos and eos.
    d_model: Width of the residual stream.
    num_layers: Number of transformer blocks.
    num_heads: Attention heads; must divide `d_model`.
    d_ff: Hidden width of the MLP.
    max_len: Longest sequence (number of learned positions).
    dtype: Activation dtype name, e.g. "float32" or "bfloat16".
    layer_norm_epsilon: LayerNorm epsilon.
  """

  vocab_size: int = 2048
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 512
  max_len: int = 64
  dtype: str = "float32"
  layer_norm_epsilon: float = 1e-5

  def __post_init__(self):
    if self.d_model % self.num_heads:
      raise ValueError(
        f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}"
      )

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
    return cls(**values)


def _layer_norm(name: str, epsilon: float) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=epsilon,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    name=name,
  )


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention."""

  config: ModelConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    head_dim = cfg.d_model // cfg.num_heads
    batch, seq, _ = hidden.shape

    def project(name: str) -> jax.Array:
      # Softmax ignores a key bias (it shifts every score of a query
      # equally), so its gradient is zero; the key projection has none.
      out = layers.dense(
        cfg.d_model,
        ("embed", "heads"),
        use_bias=name != "key",
        dtype=dtype,
        name=name,
      )(hidden)
      # [batch, seq, d_model] -> [batch, seq, heads, head_dim]
      return out.reshape(batch, seq, cfg.num_heads, head_dim)

    query, key, value = project("query"), project("key"), project("value")
    # [batch, heads, seq, seq]
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(
      head_dim
    ).astype(dtype)
    causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
    scores = jnp.where(causal, scores, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(dtype)
    # [batch, seq, heads, head_dim] -> [batch, seq, d_model]
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(
      batch, seq, cfg.d_model
    )
    out = layers.dense(cfg.d_model, ("heads", "embed"), dtype=dtype, name="out")
    return out(attended)


class Block(nn.Module):
  """Pre-LayerNorm transformer block."""

  config: ModelConfig

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    eps = cfg.layer_norm_epsilon
    hidden = hidden + CausalSelfAttention(cfg, name="attention")(
      _layer_norm("attention_norm", eps)(hidden)
    )
    mlp_in = _layer_norm("mlp_norm", eps)(hidden)
    wi = layers.dense(cfg.d_ff, ("embed", "mlp"), dtype=dtype, name="wi")
    wo = layers.dense(cfg.d_model, ("mlp", "embed"), dtype=dtype, name="wo")
    mlp_out = wo(nn.gelu(wi(mlp_in)))
    return hidden + mlp_out


class Transformer(nn.Module):
  """Decoder-only language model: token ids -> next-token logits."""

  config: ModelConfig

  @nn.compact
  def __call__(self, token_ids: jax.Array) -> jax.Array:
    """Computes logits.

    Args:
      token_ids: [batch, seq] int32 token ids, right-padded with 0.

    Returns:
      [batch, seq, vocab] float32 logits for the next token.
    """
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    embed = layers.embed(cfg.vocab_size, cfg.d_model, dtype=dtype, name="embed")
    positions = layers.embed(
      cfg.max_len,
      cfg.d_model,
      axes=("length", "embed"),
      stddev=0.01,
      dtype=dtype,
      name="positions",
    )
    seq = token_ids.shape[1]
    if seq > cfg.max_len:
      raise ValueError(f"sequence length {seq} exceeds max_len={cfg.max_len}")
    # [batch, seq, d_model] + [1, seq, d_model]
    hidden = embed(token_ids) + positions(jnp.arange(seq)[None])
    for layer in range(cfg.num_layers):
      hidden = Block(cfg, name=f"block_{layer}")(hidden)
    hidden = _layer_norm("final_norm", cfg.layer_norm_epsilon)(hidden)
    return embed.attend(hidden).astype(jnp.float32)


def apply_fn(config: ModelConfig):
  """(params, token_ids [batch, seq]) -> float32 logits, for `config`."""
  model = Transformer(config)
  return lambda params, token_ids: model.apply({"params": params}, token_ids)


def token_losses(
  logits: jax.Array, token_ids: jax.Array, loss_mask: jax.Array
) -> jax.Array:
  """Masked next-token cross-entropy per position.

  Args:
    logits: [batch, seq, vocab] logits for the token after each position.
    token_ids: [batch, seq] the input ids; position t predicts id t + 1.
    loss_mask: [batch, seq] weight of predicting token t (0 for the first
      position, padding, and, for queries, the prompt).

  Returns:
    [batch, seq - 1] weighted cross-entropy of each predicted token.
  """
  log_probs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  targets = token_ids[:, 1:]
  # [batch, seq - 1, vocab] -> [batch, seq - 1]
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return -picked * loss_mask[:, 1:]


def example_losses(
  model: Transformer,
  params: Any,
  token_ids: jax.Array,
  loss_mask: jax.Array,
) -> jax.Array:
  """Summed token cross-entropy per example (DESIGN.md section 1, "Loss").

  Args:
    model: The transformer.
    params: Its parameters (the `params` collection, unboxed).
    token_ids: [batch, seq] int32.
    loss_mask: [batch, seq] float weights, see `token_losses`.

  Returns:
    [batch] float32 losses.
  """
  logits = model.apply({"params": params}, token_ids)
  return token_losses(logits, token_ids, loss_mask).sum(axis=-1)


def abstract_params(config: ModelConfig) -> Any:
  """Shapes and dtypes of the parameters (unboxed), computing nothing."""
  model = Transformer(config)
  ids = jax.ShapeDtypeStruct((1, config.max_len), jnp.int32)
  boxed = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
  return nn.unbox(boxed)
