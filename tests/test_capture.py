"""Capture from outside: any Flax LM's encodings against brute force."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import helpers
from trak_jax import capture, gradients, hf
from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import hessian as hessian_core
from trak_jax import model as model_lib
from trak_jax import projection as projection_lib

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
VOCAB, WIDTH, HEADS, HEAD_DIM, SEQ = 40, 16, 2, 8, 10
# Only its vocabulary matters: random batches draw token ids below it.
_SHAPE = model_lib.ModelConfig(vocab_size=VOCAB, d_model=WIDTH, num_heads=2)


class _Block(nn.Module):
  """Attention with multi-axis DenseGeneral kernels, and a biased MLP."""

  @nn.compact
  def __call__(self, hidden):
    # [batch, seq, width] -> [batch, seq, heads, head_dim]
    heads = lambda name: nn.DenseGeneral((HEADS, HEAD_DIM), name=name)  # noqa: E731
    query, key = heads("query")(hidden), heads("key")(hidden)
    value = heads("value")(hidden)
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(HEAD_DIM)
    causal = jnp.tril(jnp.ones((hidden.shape[1],) * 2, bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    # [batch, seq, heads, head_dim] -> [batch, seq, width]
    hidden = hidden + nn.DenseGeneral(WIDTH, axis=(-2, -1), name="out")(
      attended
    )
    mlp = nn.Dense(2 * WIDTH, name="up")(nn.LayerNorm(name="norm")(hidden))
    return hidden + nn.Dense(WIDTH, use_bias=False, name="down")(nn.gelu(mlp))


class CustomLM(nn.Module):
  """Not the project's model: untied head, a weight used without a Dense."""

  @nn.compact
  def __call__(self, token_ids):
    hidden = nn.Embed(VOCAB, WIDTH, name="tokens")(token_ids)
    mix = self.param("mix", nn.initializers.normal(0.3), (WIDTH, WIDTH))
    hidden = hidden + jnp.tanh(hidden @ mix)  # No capture covers `mix`.
    hidden = _Block(name="block")(hidden)
    return nn.Dense(VOCAB, name="head")(hidden)


@pytest.fixture(scope="module")
def custom():
  module = CustomLM()
  params = module.init(jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32))
  params = params["params"]
  return module, params


def _batch(seed, batch_size):
  return helpers.random_batch(
    seed=seed, batch_size=batch_size, seq_len=SEQ, model_config=_SHAPE
  )


def _trained_state(params, tx, apply_fn, batch=None):
  """Two optimizer steps on random tokens: second moments worth reading."""
  state = tx.init(params)
  batch = _batch(5, 4) if batch is None else batch
  for _ in range(2):
    grads = jax.grad(lambda p: _loss(apply_fn, p, batch))(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _loss(apply_fn, params, batch):
  logits = apply_fn(params, batch.token_ids)
  return model_lib.token_losses(logits, batch.token_ids, batch.loss_mask).sum()


def test_sites_cover_dense_dense_general_and_embed_only(custom):
  module, params = custom
  apply_fn = lambda p, ids: module.apply({"params": p}, ids)  # noqa: E731
  views = capture.matrix_views(apply_fn, params)
  assert views == {
    ("block", "down", "kernel"): (2 * WIDTH, WIDTH),
    ("block", "key", "kernel"): (WIDTH, HEADS * HEAD_DIM),
    ("block", "out", "kernel"): (HEADS * HEAD_DIM, WIDTH),
    ("block", "query", "kernel"): (WIDTH, HEADS * HEAD_DIM),
    ("block", "up", "kernel"): (WIDTH, 2 * WIDTH),
    ("block", "value", "kernel"): (WIDTH, HEADS * HEAD_DIM),
    ("head", "kernel"): (WIDTH, VOCAB),
    ("tokens", "embedding"): (VOCAB, WIDTH),
  }
  assert ("mix",) not in views  # Falls back to whole per-example gradients.


def test_the_project_model_goes_through_the_same_capture():
  config = helpers.TINY_MODEL
  views = capture.matrix_views(
    model_lib.apply_fn(config), model_lib.abstract_params(config)
  )
  kinds = {
    s.kind
    for s in capture.sites(
      model_lib.apply_fn(config),
      model_lib.abstract_params(config),
      capture.EXAMPLE_IDS,
    ).values()
    if s.param == ("embed", "embedding")
  }
  assert kinds == {capture.LOOKUP, capture.ATTEND}  # The tied head.
  assert views["positions", "embedding"] == (config.max_len, config.d_model)
  assert len(views) == 6 * config.num_layers + 2


def _brute_force(encoder, batch):
  """P (g ⊘ sqrt(V)) from a loop of `jax.grad`, each weight as its view."""
  spec, mats = encoder.config.projection, encoder.matrices
  rows = []
  for i in range(batch.token_ids.shape[0]):
    one = jax.tree.map(lambda x, i=i: x[i : i + 1], batch)
    grads = gradients.flat_params(
      jax.grad(lambda p, one=one: _loss(encoder.apply_fn, p, one))(
        encoder.params
      )
    )
    corrected = {
      p: np.asarray(correction_lib.apply_to_gradient(encoder.correction[p], g))
      for p, g in grads.items()
    }
    pieces = []
    for block in encoder.layout.blocks:
      if block.path == projection_lib.VECTORS:
        flat = np.concatenate(
          [corrected[p].reshape(-1) for p in encoder.layout.vector_paths]
        )
        pieces.append(
          np.asarray(projection_lib.project_vectors(spec, mats, flat[None]))[0]
        )
        continue
      grad = corrected[block.path].reshape(block.in_shape)
      pieces.append(
        np.asarray(projection_lib.project_matrix(spec, block, mats, grad))
      )
    rows.append(np.concatenate(pieces))
  return np.stack(rows)


@pytest.mark.parametrize("kind", ["none", "adafactor", "adam"])
def test_custom_module_encodings_equal_brute_force(custom, kind):
  module, params = custom
  apply_fn = lambda p, ids: module.apply({"params": p}, ids)  # noqa: E731
  opt_state = None
  if kind != "none":
    tx = (
      optax.adafactor(1e-2, min_dim_size_to_factor=4)
      if kind == "adafactor"
      else optax.adam(1e-2)
    )
    params, opt_state = _trained_state(params, tx, apply_fn)
  config = encoder_lib.EncoderConfig(
    correction=correction_lib.CorrectionSpec(kind=kind),
    projection=projection_lib.ProjectionSpec(allocation="equal", dim=512),
    hessian=hessian_core.HessianSpec(kind="none"),
    normalize=False,
    chunk_size=2,
  )
  encoder = encoder_lib.TrackStarEncoder.for_module(
    module, params, config=config, opt_state=opt_state
  )
  if kind == "adafactor":
    # 2-D kernels fold Adafactor's factors into the Kronecker factors; the
    # [width, heads, head_dim] kernels are corrected elementwise.
    assert isinstance(
      encoder.correction["block", "up", "kernel"], correction_lib.Factored
    )
    assert isinstance(
      encoder.correction["block", "query", "kernel"],
      correction_lib.Elementwise,
    )
  batch = _batch(9, 8)
  got = np.asarray(encoder.features(batch).features)
  expected = _brute_force(encoder, batch)
  assert got.shape == (8, encoder.dim)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * scale)
  # Every block carries signal (a capture that dropped δ would give zeros).
  for block in encoder.layout.blocks:
    assert np.abs(got[:, block.offset : block.offset + block.size]).max() > 0


def _hand_factored_scales(encoder, nu, epsilon):
  """Per parameter, 1 / sqrt(V + ε) in numpy: V factored for each captured
  weight (as its matrix view), Adam's `nu` itself for the rest."""
  scales = {}
  for path, v in gradients.flat_params(nu).items():
    v = np.asarray(v, np.float64)
    if path in encoder.views:
      matrix = v.reshape(encoder.views[path])
      v_row, v_col = matrix.mean(axis=1), matrix.mean(axis=0)
      v = np.outer(v_row, v_col) / v_row.mean()
    scales[path] = 1 / np.sqrt(v + epsilon)
  return scales


def _every_token_batch():
  """Each token id of the random batches at a position that has a loss
  after it, so that no row of V is zero: where one is, where ε goes (V̂ + ε,
  or V + ε factored) decides that row's scale."""
  ids = np.arange(4, VOCAB, dtype=np.int32).reshape(4, -1)  # [4, 9]
  ids = np.concatenate([ids, ids[:, :1]], axis=1)  # [4, SEQ]
  mask = np.ones(ids.shape, np.float32)
  mask[:, 0] = 0
  return data_lib.Batch(token_ids=ids, loss_mask=mask)


def test_factored_adam_encodings_equal_brute_force(custom):
  module, params = custom
  apply_fn = lambda p, ids: module.apply({"params": p}, ids)  # noqa: E731
  params, opt_state = _trained_state(
    params, optax.adam(1e-2), apply_fn, _every_token_batch()
  )
  config = encoder_lib.EncoderConfig(
    correction=correction_lib.CorrectionSpec(kind="adam", factored=True),
    projection=projection_lib.ProjectionSpec(allocation="equal", dim=512),
    hessian=hessian_core.HessianSpec(kind="none"),
    normalize=False,
  )
  encoder = encoder_lib.TrackStarEncoder.for_module(
    module, params, config=config, opt_state=opt_state
  )
  # Every captured weight, the [width, heads, head_dim] kernels included,
  # takes the Kronecker path; `mix`, which no capture covers, stays
  # elementwise.
  assert all(
    isinstance(encoder.correction[p], correction_lib.Factored)
    for p in encoder.views
  )
  assert isinstance(encoder.correction["mix",], correction_lib.Elementwise)
  nu = optax.tree_utils.tree_get(opt_state, "nu")
  scales = _hand_factored_scales(encoder, nu, config.correction.epsilon)
  spec, mats = config.projection, encoder.matrices
  batch = _batch(4, 8)
  expected = []
  for i in range(8):
    one = jax.tree.map(lambda x, i=i: x[i : i + 1], batch)
    grads = gradients.flat_params(
      jax.grad(lambda p, one=one: _loss(apply_fn, p, one))(params)
    )
    pieces = []
    for block in encoder.layout.blocks:
      if block.path == projection_lib.VECTORS:
        flat = np.concatenate(
          [
            (np.asarray(grads[p]) * scales[p]).reshape(-1)
            for p in encoder.layout.vector_paths
          ]
        )
        pieces.append(projection_lib.project_vectors(spec, mats, flat[None])[0])
        continue
      grad = np.asarray(grads[block.path]).reshape(block.in_shape)
      corrected = (grad * scales[block.path]).astype(np.float32)
      pieces.append(projection_lib.project_matrix(spec, block, mats, corrected))
    expected.append(np.concatenate([np.asarray(x) for x in pieces]))
  expected = np.stack(expected)
  got = np.asarray(encoder.features(batch).features)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * scale)


def test_adafactor_scale_of_a_3d_kernel_is_what_optax_divides_by(custom):
  module, params = custom
  apply_fn = lambda p, ids: module.apply({"params": p}, ids)  # noqa: E731
  tx = optax.scale_by_factored_rms(min_dim_size_to_factor=4, epsilon=1e-30)
  params, state = _trained_state(params, tx, apply_fn)
  grads = jax.grad(lambda p: _loss(apply_fn, p, _batch(6, 4)))(params)
  updates, state = tx.update(grads, state, params)
  # `state` holds the statistics this update divided by.
  fix = correction_lib.from_adafactor(state, params, epsilon=1e-30)
  path = ("block", "query", "kernel")
  scale = fix[path].scale
  assert scale.shape == (WIDTH, HEADS, HEAD_DIM)
  flat = gradients.flat_params
  np.testing.assert_allclose(
    flat(updates)[path], flat(grads)[path] * scale, rtol=1e-4, atol=1e-9
  )


@pytest.mark.parametrize("name", ["qwen2", "gpt_neox"])
def test_hugging_face_port_encodings_equal_brute_force(name):
  model = hf.load(FIXTURES / name)
  config = encoder_lib.EncoderConfig(
    correction=correction_lib.CorrectionSpec(kind="none"),
    projection=projection_lib.ProjectionSpec(allocation="equal", dim=1024),
    hessian=hessian_core.HessianSpec(kind="none"),
    normalize=False,
  )
  encoder = encoder_lib.TrackStarEncoder.for_module(
    model.module, model.params, config=config
  )
  # Every weight matrix of the port is captured; only vectors are left.
  flat = gradients.flat_params(model.params)
  assert all(flat[p].ndim == 1 for p in encoder.layout.vector_paths)
  shape = model_lib.ModelConfig(vocab_size=model.config.vocab_size)
  batch = helpers.random_batch(
    seed=2, batch_size=8, seq_len=12, model_config=shape
  )
  got = np.asarray(encoder.features(batch).features)
  expected = _brute_force(encoder, batch)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * scale)
