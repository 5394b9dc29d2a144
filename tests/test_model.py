"""The transformer: causality, logical axes, losses."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests import helpers
from trak_jax import model as model_lib
from trak_jax import partitioning

CONFIG = helpers.TINY_MODEL


@pytest.fixture(scope="module")
def model() -> model_lib.Transformer:
  return model_lib.Transformer(CONFIG)


def _random_ids(seed: int, shape: tuple[int, int]) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.integers(4, CONFIG.vocab_size, shape).astype(np.int32)


def _params(model, seq_len: int = 12, seed: int = 0):
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return nn.unbox(model.init(jax.random.key(seed), ids)["params"])


def test_logits_do_not_depend_on_later_tokens(model):
  params = _params(model)
  apply = jax.jit(model.apply)
  ids = _random_ids(0, (2, 12))
  logits = np.asarray(apply({"params": params}, ids))
  for t in (1, 5, 11):
    changed = ids.copy()
    changed[:, t:] = (ids[:, t:] - 4 + 7) % (CONFIG.vocab_size - 4) + 4
    assert not np.array_equal(changed[:, t:], ids[:, t:])
    new_logits = np.asarray(apply({"params": params}, changed))
    np.testing.assert_allclose(
      new_logits[:, :t], logits[:, :t], rtol=0, atol=1e-6
    )
    # The changed positions do see their own (new) tokens.
    assert np.abs(new_logits[:, t:] - logits[:, t:]).max() > 1e-4


def test_every_parameter_has_logical_axis_names(model):
  ids = jnp.zeros((1, 12), jnp.int32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), ids)
  specs = traverse_util.flatten_dict(nn.get_partition_spec(abstract["params"]))
  shapes = traverse_util.flatten_dict(nn.unbox(abstract["params"]))
  assert specs.keys() == shapes.keys()
  known = {name for name, _ in partitioning.LOGICAL_RULES}
  for path, spec in specs.items():
    assert spec is not None, path
    assert len(spec) == len(shapes[path].shape), path
    assert set(spec) <= known, (path, spec)
  kernels = {
    p: tuple(s) for p, s in specs.items() if p[-1] in ("kernel", "embedding")
  }
  # Two blocks of query, key, value, out, wi, wo, the tied embedding and
  # the positions.
  assert len(kernels) == 2 * 6 + 2
  assert kernels["positions", "embedding"] == ("length", "embed")
  assert kernels["embed", "embedding"] == ("vocab", "embed")
  assert kernels["block_0", "wi", "kernel"] == ("embed", "mlp")
  assert kernels["block_1", "wo", "kernel"] == ("mlp", "embed")
  assert kernels["block_0", "attention", "query", "kernel"] == (
    "embed",
    "heads",
  )
  assert kernels["block_1", "attention", "out", "kernel"] == ("heads", "embed")


def _numpy_losses(logits, ids, mask) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  batch, seq, _ = logits.shape
  losses = np.zeros(batch)
  for b in range(batch):
    for t in range(1, seq):
      row = logits[b, t - 1]
      log_probs = row - row.max() - np.log(np.exp(row - row.max()).sum())
      losses[b] -= mask[b, t] * log_probs[ids[b, t]]
  return losses


def test_example_losses_equal_hand_computed_cross_entropy(model):
  params = _params(model, seed=4)
  ids = _random_ids(4, (3, 9))
  mask = np.ones((3, 9), np.float32)
  mask[:, 0] = 0.0
  ids[1, 6:] = 0  # Padding.
  mask[1, 6:] = 0.0
  mask[2, :5] = 0.0  # A query: loss on the last tokens only.
  losses = model_lib.example_losses(model, params, ids, mask)
  logits = model.apply({"params": params}, ids)
  expected = _numpy_losses(logits, ids, mask)
  assert losses.shape == (3,)
  np.testing.assert_allclose(losses, expected, rtol=1e-5)
  # Masking matters, and masked-out padding does not.
  assert (
    abs(expected[1] - _numpy_losses(logits, ids, np.ones_like(mask))[1]) > 1
  )
  repadded = ids.copy()
  repadded[1, 6:] = 9
  again = model_lib.example_losses(model, params, repadded, mask)
  np.testing.assert_allclose(again[1], losses[1], rtol=1e-6)


def test_too_long_sequence_is_rejected(model):
  params = _params(model)
  ids = jnp.zeros((1, CONFIG.max_len + 1), jnp.int32)
  with pytest.raises(ValueError, match=f"max_len={CONFIG.max_len}"):
    model.apply({"params": params}, ids)
