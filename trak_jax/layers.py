"""Weight layers with logical axis names, shared by every model here.

Every weight matrix is a plain `nn.Dense` or `nn.Embed` (never a
hand-written matmul), so `trak_jax.capture` finds every parameterised
product; every parameter carries logical axis names
(`nn.with_logical_partitioning`) from `trak_jax.partitioning`'s vocabulary.
Parameters are float32; `dtype` is the activation dtype.
"""

from typing import Any

import flax.linen as nn


def dense(
  features: int,
  axes: tuple[str, str],
  *,
  name: str,
  dtype: Any,
  use_bias: bool = True,
) -> nn.Dense:
  """An `nn.Dense` whose [in, out] kernel (N(0, 0.02²)) and [out] bias
  (zeros) carry `axes`."""
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=dtype,
    kernel_init=nn.with_logical_partitioning(
      nn.initializers.normal(stddev=0.02), axes
    ),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
    name=name,
  )


def embed(
  num_embeddings: int,
  features: int,
  *,
  name: str,
  dtype: Any,
  axes: tuple[str, str] = ("vocab", "embed"),
  stddev: float = 0.02,
) -> nn.Embed:
  """An `nn.Embed` ([num_embeddings, features], N(0, stddev²)) carrying
  `axes`."""
  return nn.Embed(
    num_embeddings,
    features,
    dtype=dtype,
    embedding_init=nn.with_logical_partitioning(
      nn.initializers.normal(stddev=stddev), axes
    ),
    name=name,
  )
