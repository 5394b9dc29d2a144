"""The TrackStar encoder against brute force."""

import dataclasses
import json
import types

import jax
import numpy as np
import optax
import pytest

from tests import helpers
from trak_jax import correction as correction_lib
from trak_jax import encoder as encoder_lib
from trak_jax import gradients, partitioning
from trak_jax import hessian as hessian_core
from trak_jax import model as model_lib
from trak_jax import projection as projection_lib
from trak_jax import store as store_lib
from trak_jax import train as train_lib

NO_HESSIAN = hessian_core.HessianSpec(kind="none")


@pytest.fixture(scope="module")
def adafactor_state():
  return helpers.trained_state("adafactor")


@pytest.fixture(scope="module")
def adam_state():
  return helpers.trained_state("adamw")


def make_encoder(
  state,
  *,
  correction="none",
  factored=False,
  projection=None,
  normalize=False,
  mesh=None,
  fix=None,
  chunk_size=3,
  model_config=helpers.TINY_MODEL,
):
  config = encoder_lib.EncoderConfig(
    correction=correction_lib.CorrectionSpec(
      kind=correction, factored=factored
    ),
    projection=projection
    or projection_lib.ProjectionSpec(allocation="equal", dim=256),
    hessian=NO_HESSIAN,
    normalize=normalize,
    chunk_size=chunk_size,
  )
  if fix is None:
    fix = correction_lib.from_checkpoint(
      config.correction, state.opt_state, state.params
    )
  mesh = mesh or jax.tree.leaves(state.params)[0].sharding.mesh
  return encoder_lib.TrackStarEncoder(
    params=state.params,
    apply_fn=model_lib.apply_fn(model_config),
    config=config,
    correction=fix,
    checkpoint_digest="digest",
    mesh=mesh,
  )


def brute_force_features(encoder, batch):
  """P (g ⊘ sqrt(V)) from whole `jax.grad` gradients, block by block."""
  grad_fn = jax.jit(gradients.per_example_grads, static_argnums=0)
  grads = gradients.flat_params(
    grad_fn(encoder.apply_fn, encoder.params, batch.token_ids, batch.loss_mask)
  )
  size = batch.token_ids.shape[0]
  spec, mats = encoder.config.projection, encoder.matrices
  rows = []
  for i in range(size):
    pieces = []
    for block in encoder.layout.blocks:
      if block.path == projection_lib.VECTORS:
        flat = np.concatenate(
          [
            np.asarray(
              correction_lib.apply_to_gradient(
                encoder.correction[p], grads[p][i]
              )
            ).reshape(-1)
            for p in encoder.layout.vector_paths
          ]
        )
        pieces.append(
          np.asarray(projection_lib.project_vectors(spec, mats, flat[None]))[0]
        )
        continue
      corrected = correction_lib.apply_to_gradient(
        encoder.correction[block.path], grads[block.path][i]
      )
      pieces.append(
        np.asarray(projection_lib.project_matrix(spec, block, mats, corrected))
      )
    rows.append(np.concatenate(pieces))
  return np.stack(rows)


def assert_close(actual, expected, rtol=2e-4):
  scale = np.abs(expected).max()
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def test_per_example_grads_equal_a_loop_of_grad(adafactor_state):
  model = model_lib.Transformer(helpers.TINY_MODEL)
  apply_fn = model_lib.apply_fn(helpers.TINY_MODEL)
  batch = helpers.random_batch(batch_size=4)
  vmapped = gradients.per_example_grads(
    apply_fn, adafactor_state.params, batch.token_ids, batch.loss_mask
  )
  for i in range(4):
    single = jax.grad(
      lambda p, i=i: model_lib.example_losses(
        model, p, batch.token_ids[i : i + 1], batch.loss_mask[i : i + 1]
      ).sum()
    )(adafactor_state.params)
    jax.tree.map(
      lambda v, s, i=i: np.testing.assert_allclose(
        v[i], s, rtol=1e-4, atol=1e-6
      ),
      vmapped,
      single,
    )


def test_factors_materialize_to_the_whole_gradient(adafactor_state):
  apply_fn = model_lib.apply_fn(helpers.TINY_MODEL)
  params = adafactor_state.params
  batch = helpers.random_batch(batch_size=3)
  factors = gradients.make_factor_fn(apply_fn, params)(
    params, batch.token_ids, batch.loss_mask
  )
  whole = gradients.flat_params(
    gradients.per_example_grads(
      apply_fn, params, batch.token_ids, batch.loss_mask
    )
  )
  flat = gradients.flat_params(params)
  assert set(factors.matrices) | set(factors.vectors) == set(flat)
  for path, terms in factors.matrices.items():
    for i in range(3):
      example = [jax.tree.map(lambda x, i=i: x[i], t) for t in terms]
      got = gradients.materialize(example, flat[path].shape)
      np.testing.assert_allclose(got, whole[path][i], rtol=1e-4, atol=1e-6)
  for path, grad in factors.vectors.items():
    np.testing.assert_allclose(grad, whole[path], rtol=1e-4, atol=1e-6)


def _estimated_v(state, *, seed=7, size=6):
  apply_fn = model_lib.apply_fn(helpers.TINY_MODEL)
  sample = helpers.random_batch(seed=seed, batch_size=size)
  grads = gradients.per_example_grads(
    apply_fn, state.params, sample.token_ids, sample.loss_mask
  )
  return correction_lib.estimate([(grads, size)], state.params, epsilon=1e-12)


@pytest.mark.parametrize(
  "kind, factored",
  [
    ("none", False),
    ("adafactor", False),
    ("adam", False),
    ("estimated", False),
    ("adam", True),
    ("estimated", True),
  ],
)
def test_kronecker_equals_explicit_projection(
  kind, factored, adafactor_state, adam_state
):
  state = adam_state if kind == "adam" else adafactor_state
  batch = helpers.random_batch(batch_size=5)
  fix = _estimated_v(state) if kind == "estimated" else None
  encoder = make_encoder(state, correction=kind, factored=factored, fix=fix)
  if kind == "adafactor" or factored:  # No matrix gradient is formed.
    assert all(
      isinstance(encoder.correction[b.path], correction_lib.Factored)
      for b in encoder.layout.blocks[:-1]
    )
  got = np.asarray(encoder.features(batch).features)
  assert got.shape == (5, 256)
  assert_close(got, brute_force_features(encoder, batch))


def _factored_by_hand(v, view, epsilon):
  """(V̂ + ε)^(-1/2) of V̂ = outer(v_row, v_col) / mean(v_row), in numpy."""
  matrix = np.asarray(v, np.float64).reshape(view)
  v_row, v_col = matrix.mean(axis=1), matrix.mean(axis=0)
  return 1 / np.sqrt(np.outer(v_row, v_col) / v_row.mean() + epsilon)


@pytest.mark.parametrize(
  "shape, view", [((5, 7), (5, 7)), ((9, 4), (9, 4)), ((4, 2, 3), (4, 6))]
)
def test_factored_v_is_the_row_and_column_mean_formula(shape, view):
  v = np.random.default_rng(0).uniform(0.1, 2.0, shape).astype(np.float32)
  fix = correction_lib.factored_second_moment(
    jax.numpy.asarray(v), view, epsilon=1e-12
  )
  assert fix.rows.shape == (view[0],) and fix.cols.shape == (view[1],)
  np.testing.assert_allclose(
    np.outer(fix.rows, fix.cols), _factored_by_hand(v, view, 1e-12), rtol=1e-5
  )
  # A V that is an outer product already is its own factored form.
  rank_one = np.outer(v.reshape(view)[:, 0], v.reshape(view)[0])
  again = correction_lib.factored_second_moment(
    jax.numpy.asarray(rank_one), view, epsilon=1e-12
  )
  np.testing.assert_allclose(
    np.outer(again.rows, again.cols), 1 / np.sqrt(rank_one), rtol=1e-5
  )


def test_factorize_keeps_what_has_no_matrix_view():
  v = np.random.default_rng(1).uniform(0.1, 2.0, (6, 4)).astype(np.float32)
  scale = jax.lax.rsqrt(jax.numpy.asarray(v) + 1e-12)
  bias = correction_lib.Elementwise(scale[0])
  unseen = correction_lib.Elementwise(scale)  # a matrix no capture covers
  fix = correction_lib.factorize(
    {
      ("w",): correction_lib.Elementwise(scale),
      ("b",): bias,
      ("mix",): unseen,
      ("off",): None,
    },
    {("w",): (6, 4), ("off",): (6, 4)},
  )
  assert fix[("b",)] is bias and fix[("mix",)] is unseen
  assert fix[("off",)] is None
  # V + ε is read off the elementwise scale, then factored.
  np.testing.assert_allclose(
    np.outer(fix[("w",)].rows, fix[("w",)].cols),
    _factored_by_hand(v, (6, 4), 1e-12),
    rtol=1e-5,
  )


@pytest.mark.parametrize("kind", ["none", "adafactor"])
def test_factored_is_refused_where_v_is_not_elementwise(kind):
  with pytest.raises(ValueError, match="'factored'.*" + kind):
    correction_lib.CorrectionSpec(kind=kind, factored=True)
  with pytest.raises(ValueError, match="'factored'"):
    encoder_lib.preset("trackstar", correction=kind, factored=True)
  assert encoder_lib.preset(
    "trackstar", correction="adam", factored=True
  ).correction == correction_lib.CorrectionSpec(kind="adam", factored=True)


def test_partly_factored_adafactor_mixes_both_paths():
  # The 24 x 32 position table is below Adafactor's factoring size of 30,
  # so it has an elementwise `v`; every other matrix is factored.
  model_config = dataclasses.replace(
    helpers.TINY_MODEL, d_model=32, d_ff=64, max_len=24
  )
  config = dataclasses.replace(
    helpers.tiny_optimizer("adafactor"), min_dim_size_to_factor=30
  )
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  state = train_lib.init_state(model_config, config, mesh, seed=0)
  step = train_lib.make_train_step(model_config, config, mesh)
  state, _ = step(state, helpers.random_batch(model_config=model_config))
  encoder = make_encoder(
    state, correction="adafactor", model_config=model_config
  )
  kinds = {type(encoder.correction[b.path]) for b in encoder.layout.blocks[:-1]}
  assert kinds == {correction_lib.Factored, correction_lib.Elementwise}
  batch = helpers.random_batch(seed=3, batch_size=4, model_config=model_config)
  assert_close(
    np.asarray(encoder.features(batch).features),
    brute_force_features(encoder, batch),
  )


@pytest.mark.parametrize("kind", ["none", "dense"])
def test_dense_and_exact_projection_equal_brute_force(kind, adafactor_state):
  spec = projection_lib.ProjectionSpec(kind=kind, allocation="equal", dim=256)
  encoder = make_encoder(
    adafactor_state, correction="adafactor", projection=spec
  )
  batch = helpers.random_batch(batch_size=3)
  got = np.asarray(encoder.features(batch).features)
  assert_close(got, brute_force_features(encoder, batch))
  if kind == "none":
    size = sum(x.size for x in jax.tree.leaves(adafactor_state.params))
    assert got.shape == (3, size)


def test_encoding_ignores_batch_and_padding(adafactor_state):
  encoder = make_encoder(adafactor_state, correction="adafactor")
  batch = helpers.random_batch(batch_size=6, seq_len=20)
  alone = np.asarray(encoder.features(batch).features)
  # The same examples padded to 32 tokens, in reverse order, with others.
  lengths = (batch.token_ids > 0).sum(axis=1)
  others = helpers.random_batch(seed=9, batch_size=2, seq_len=32)
  ids = np.zeros((8, 32), np.int32)
  mask = np.zeros((8, 32), np.float32)
  ids[:6, :20], mask[:6, :20] = batch.token_ids[::-1], batch.loss_mask[::-1]
  ids[6:], mask[6:] = others.token_ids, others.loss_mask
  mixed = encoder.features(type(batch)(ids, mask))
  assert_close(np.asarray(mixed.features[:6])[::-1], alone, rtol=1e-4)
  assert (np.asarray(mixed.num_tokens[:6])[::-1] == lengths - 1).all()


def test_same_seed_same_encodings_other_seed_differs(adafactor_state):
  batch = helpers.random_batch(batch_size=4)

  def features(seed):
    spec = projection_lib.ProjectionSpec(allocation="equal", dim=256, seed=seed)
    encoder = make_encoder(adafactor_state, projection=spec)
    return np.asarray(encoder.features(batch).features)

  np.testing.assert_array_equal(features(1), features(1))
  assert not np.allclose(features(1), features(2))


def _jl_rms_z(projected, exact, layout_exact, layout, kind):
  """RMS of (projected - exact inner product) / its expected std."""
  gram = projected @ projected.T
  true = exact @ exact.T
  variance = np.zeros_like(true)
  for block_exact, block in zip(
    layout_exact.blocks, layout.blocks, strict=True
  ):
    sl = slice(block_exact.offset, block_exact.offset + block_exact.size)
    part = exact[:, sl]
    norms = np.linalg.norm(part, axis=1)
    outer = np.outer(norms, norms) ** 2
    inner = (part @ part.T) ** 2
    if kind == "kronecker" and block.path != projection_lib.VECTORS:
      # Each of the r sketches has this bound; their mean has 1/r of it.
      k_left, k_right = block.sides
      factor = 1 / k_left + 1 / k_right + 1 / (k_left * k_right)
      variance += 2 * outer * factor / block.terms
    else:
      variance += (inner + outer) / block.size
  z = (gram - true) / np.sqrt(variance)
  return float(np.sqrt(np.mean(z[np.triu_indices(len(z), 1)] ** 2)))


@pytest.mark.parametrize("kind", ["dense", "kronecker"])
def test_projection_preserves_inner_products(kind, adafactor_state):
  batch = helpers.random_batch(batch_size=12)
  exact_encoder = make_encoder(
    adafactor_state, projection=projection_lib.ProjectionSpec(kind="none")
  )
  exact = np.asarray(exact_encoder.features(batch).features, np.float64)
  errors = {}
  for dim in (512, 4096):
    spec = projection_lib.ProjectionSpec(
      kind=kind, allocation="equal", dim=dim, seed=5
    )
    encoder = make_encoder(adafactor_state, projection=spec)
    projected = np.asarray(encoder.features(batch).features, np.float64)
    assert projected.shape[1] == dim < exact.shape[1]
    z = _jl_rms_z(projected, exact, exact_encoder.layout, encoder.layout, kind)
    assert 0.05 < z < 1.5, f"d={dim}: error {z:.2f} x its expected std"
    errors[dim] = np.abs(projected @ projected.T - exact @ exact.T).mean()
  assert errors[4096] < errors[512]


def test_sharded_encodings_equal_single_device(adafactor_state):
  devices = jax.devices()
  assert len(devices) == 8
  mesh = partitioning.make_mesh(data=4, model=2, devices=devices)
  _, shardings = train_lib.abstract_state_and_shardings(
    helpers.TINY_MODEL, helpers.tiny_optimizer("adafactor"), mesh
  )
  sharded_state = jax.device_put(adafactor_state, shardings)
  assert sharded_state.params["block_0"]["wi"]["kernel"].sharding.spec == (
    jax.sharding.PartitionSpec(None, "model")
  )
  batch = helpers.random_batch(batch_size=8)
  single = make_encoder(adafactor_state, correction="adafactor")
  sharded = make_encoder(sharded_state, correction="adafactor", mesh=mesh)
  out = sharded.features(batch)
  assert out.features.sharding.spec[0] == "data"
  assert_close(
    np.asarray(out.features), np.asarray(single.features(batch).features)
  )


def test_normalised_encodings_have_unit_norm(adafactor_state):
  encoder = make_encoder(
    adafactor_state, correction="adafactor", normalize=True
  )
  out = encoder.encode(helpers.random_batch(batch_size=4))
  np.testing.assert_allclose(
    np.linalg.norm(np.asarray(out.features), axis=1), 1.0, rtol=1e-5
  )
  assert np.asarray(out.finite).all()


def test_missing_optimizer_statistics_is_a_clear_error(adam_state):
  with pytest.raises(correction_lib.MissingOptimizerStateError, match="v_row"):
    make_encoder(adam_state, correction="adafactor")


def test_fingerprint_names_the_differing_field(adafactor_state):
  a = make_encoder(adafactor_state).fingerprint
  spec = projection_lib.ProjectionSpec(allocation="equal", dim=128)
  b = make_encoder(adafactor_state, projection=spec).fingerprint
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'projection'"
  ):
    a.check_matches(b, what="store")
  a.check_matches(make_encoder(adafactor_state).fingerprint, what="store")


def _write_store(directory, encoder):
  """A one-shard store of zeros made by `encoder` (its manifest is what
  counts here)."""
  records = [
    store_lib.EncodedRecord("x", np.zeros(encoder.dim, np.float32), 0.0, 1)
  ]
  shard = store_lib.write_shard(
    directory,
    index=0,
    num_shards=1,
    records=records,
    rejected=[],
    fingerprint=encoder.fingerprint,
  )
  store_lib.finalize(
    directory,
    shards=[shard],
    parse_rejected=[],
    fingerprint=encoder.fingerprint,
    encoder_config=encoder.config.to_dict(),
    num_read=1,
    source="test",
  )


def test_a_store_of_elementwise_v_is_refused_by_a_factored_query_side(
  adam_state, tmp_path
):
  elementwise = make_encoder(adam_state, correction="adam")
  _write_store(str(tmp_path), elementwise)
  store = store_lib.EncodingStore(str(tmp_path))
  recorded = store.manifest["encoder_config"]
  assert recorded["correction"]["factored"] is False
  # Fingerprints of an elementwise V read as before the field existed.
  assert "factored" not in json.loads(store.fingerprint.correction)
  assert encoder_lib.EncoderConfig.from_dict(recorded) == elementwise.config
  query_config = encoder_lib.with_recorded_layout(
    dataclasses.replace(
      elementwise.config,
      correction=correction_lib.CorrectionSpec(kind="adam", factored=True),
    ),
    recorded,
  )
  assert query_config.correction.factored  # The query side's own choice.
  factored = make_encoder(adam_state, correction="adam", factored=True)
  assert factored.config == query_config
  assert json.loads(factored.fingerprint.correction)["factored"] is True
  with pytest.raises(
    encoder_lib.FingerprintMismatchError,
    match="field 'correction' differs in 'factored'",
  ):
    store_lib.EncodingStore(str(tmp_path), expected=factored.fingerprint)
  store_lib.EncodingStore(str(tmp_path), expected=elementwise.fingerprint)


def test_a_saved_estimate_factors_as_the_estimate_it_was(
  adafactor_state, tmp_path
):
  # The saved file stays elementwise; the factored form is derived when an
  # encoder is built, the same from the file as from the estimate itself.
  estimated = _estimated_v(adafactor_state)
  path = str(tmp_path / "second_moments.npz")
  digest = correction_lib.save_estimate(estimated, path)
  spec = correction_lib.CorrectionSpec(
    kind="estimated", estimate_path=path, estimate_digest=digest, factored=True
  )
  loaded = correction_lib.from_checkpoint(spec, None, adafactor_state.params)
  assert correction_lib.estimate_digest(loaded) == digest
  batch = helpers.random_batch(seed=2, batch_size=4)
  here, there = (
    make_encoder(adafactor_state, correction="estimated", factored=True, fix=f)
    for f in (estimated, loaded)
  )
  np.testing.assert_array_equal(
    np.asarray(here.features(batch).features),
    np.asarray(there.features(batch).features),
  )
  assert all(isinstance(f, correction_lib.Elementwise) for f in loaded.values())
  assert isinstance(
    there.correction["block_0", "wi", "kernel"], correction_lib.Factored
  )


def _top_k(encodings, k=10):
  """[n, k] indices of each row's k highest cosines, itself included."""
  scores = encodings @ encodings.T
  return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_factored_v_ranks_each_example_first_for_itself(adam_state):
  # Each example is its own query: with unit encodings its self-score 1 is
  # the highest, whichever V, so the top-10 lists of the factored and the
  # elementwise V share at least that one. The share beyond it is measured
  # (bench/factored_v.py), not asserted.
  batch = helpers.random_batch(seed=5, batch_size=24)
  ranked = {
    factored: _top_k(
      np.asarray(
        make_encoder(
          adam_state, correction="adam", factored=factored, normalize=True
        )
        .encode(batch)
        .features,
        np.float64,
      )
    )
    for factored in (False, True)
  }
  for top in ranked.values():
    np.testing.assert_array_equal(top[:, 0], np.arange(24))
  overlaps = [
    len(set(a) & set(b)) / 10
    for a, b in zip(ranked[False], ranked[True], strict=True)
  ]
  assert 0.1 <= min(overlaps) and max(overlaps) <= 1.0


def test_presets_switch_one_component_each():
  full = encoder_lib.preset("trackstar")
  assert full.correction.kind == "adafactor" and full.normalize
  assert full.hessian.kind == "mixed"
  assert encoder_lib.preset("trackstar_no_correction").correction.kind == "none"
  assert encoder_lib.preset("trackstar_no_hessian").hessian.kind == "none"
  assert not encoder_lib.preset("trackstar_no_norm").normalize
  dot = encoder_lib.preset("grad_dot")
  assert (dot.correction.kind, dot.hessian.kind, dot.normalize) == (
    "none",
    "none",
    False,
  )
  assert encoder_lib.preset("trak_like").hessian.kind == "train"
  with pytest.raises(ValueError, match="unknown preset"):
    encoder_lib.preset("tracin")


def test_vector_block_stays_small_as_d_grows():
  config = model_lib.ModelConfig(
    vocab_size=2048, d_model=128, num_layers=4, num_heads=4, d_ff=512
  )
  small, large = (
    encoder_lib.model_layout(
      config,
      # One sketch per matrix: r > 1 rounds the matrices' dims down and the
      # equal split gives what is left over to the vector block.
      projection_lib.ProjectionSpec(
        allocation="equal", dim=dim, kronecker_terms=1
      ),
    )
    for dim in (4096, 65536)
  )
  assert small.dim == 4096 and large.dim == 65536
  assert small.blocks[-1].out_shape == (352,)  # d // 16 plus rounding.
  vectors = large.blocks[-1]
  assert vectors.path == projection_lib.VECTORS
  assert vectors.in_shape == (6400,)
  # Capped at MAX_VECTOR_DIM (plus what rounding leaves), not d // 16.
  matrices = len(large.blocks) - 1
  assert vectors.out_shape[0] < projection_lib.MAX_VECTOR_DIM + 32 * matrices
  assert vectors.out_shape[0] < 65536 // 16


class _Loaded:
  """The parts of a loaded checkpoint the encoder reads."""

  def __init__(self, state):
    self.params, self.opt_state = state.params, state.opt_state
    self.model_config, self.digest = helpers.TINY_MODEL, "digest"


def test_block_shares_equal_brute_force_gradient_shares(adafactor_state):
  # At a d this large every matrix's probe projection is the identity, so
  # their measured shares are exact; the vector block takes the equal
  # split's leftover dims as a tall Gaussian (relative error ~ sqrt(2/k)).
  config = encoder_lib.EncoderConfig(
    correction=correction_lib.CorrectionSpec(kind="adafactor"),
    projection=projection_lib.ProjectionSpec(dim=2**16),
    hessian=NO_HESSIAN,
  )
  batch = helpers.random_batch(seed=11)
  shares = encoder_lib.block_shares(_Loaded(adafactor_state), config, [batch])
  exact_encoder = make_encoder(
    adafactor_state,
    correction="adafactor",
    projection=projection_lib.ProjectionSpec(kind="none"),
  )
  whole = np.asarray(exact_encoder.features(batch).features, np.float64)
  totals = (whole**2).sum(-1)
  for block in exact_encoder.layout.blocks:
    part = whole[:, block.offset : block.offset + block.size]
    expected = np.mean((part**2).sum(-1) / totals)
    name = projection_lib.block_name(block.path)
    tolerance = 0.05 if block.path == projection_lib.VECTORS else 1e-3
    assert shares[name] == pytest.approx(expected, rel=tolerance, abs=1e-6)
  assert sum(shares.values()) == pytest.approx(1.0)


def test_energy_weights_are_the_geometric_mean_of_both_sides():
  config = encoder_lib.EncoderConfig(
    projection=projection_lib.ProjectionSpec(dim=64)
  )
  corpus = {"a": 0.5, "b": 0.5}
  queries = {"a": 0.9, "b": 0.1}
  energy = dict(
    encoder_lib.with_block_energy(
      config, corpus, queries
    ).projection.block_energy
  )
  assert energy["a"] / energy["b"] == pytest.approx(3.0, rel=1e-4)
  alone = dict(
    encoder_lib.with_block_energy(config, corpus).projection.block_energy
  )
  assert alone == {"a": 0.5, "b": 0.5}
  recorded = encoder_lib.with_block_energy(config, corpus, queries)
  assert (
    encoder_lib.with_recorded_layout(config, recorded.to_dict()) == recorded
  )
  measured = encoder_lib.EncoderConfig(
    projection=projection_lib.ProjectionSpec(dim=64, block_energy=(("a", 1),))
  )
  assert (
    encoder_lib.with_recorded_layout(measured, recorded.to_dict()) == measured
  )


def test_grad_dot_corrected_is_the_corrected_gradient_dot(adafactor_state):
  config = encoder_lib.preset(
    "grad_dot_corrected",
    projection=projection_lib.ProjectionSpec(kind="none"),
  )
  assert (config.hessian.kind, config.normalize) == ("none", False)
  encoder = make_encoder(
    adafactor_state,
    correction="adafactor",
    projection=config.projection,
  )
  assert encoder.config.correction == config.correction
  batch = helpers.random_batch(batch_size=3)
  got = np.asarray(encoder.encode(batch).features)
  # Whole gradients, each divided by sqrt(V) (materialised per leaf).
  grads = gradients.flat_params(
    gradients.per_example_grads(
      encoder.apply_fn, encoder.params, batch.token_ids, batch.loss_mask
    )
  )
  fix = encoder.correction
  rows = np.stack(
    [
      np.concatenate(
        [
          np.asarray(
            correction_lib.apply_to_gradient(fix[p], grads[p][i])
          ).reshape(-1)
          for p in sorted(grads)
        ]
      )
      for i in range(3)
    ]
  )
  assert_close(got @ got.T, rows @ rows.T, rtol=1e-3)


def _one_sided(correction, projection, **overrides):
  """trackstar_one_sided with no R, and `overrides`."""
  config = encoder_lib.preset(
    "trackstar_one_sided", correction=correction, projection=projection
  )
  assert config.correction.kind == correction
  assert config.query_correction == correction_lib.CorrectionSpec(kind="none")
  return dataclasses.replace(config, hessian=NO_HESSIAN, **overrides)


def _unit_rows(rows):
  return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_trackstar_one_sided_corrects_the_training_side_only(adam_state):
  whole = projection_lib.ProjectionSpec(kind="none")
  config = _one_sided("adam", whole, chunk_size=3)
  assert config.normalize and config.one_sided
  encoder = encoder_lib.from_checkpoint(_Loaded(adam_state), config)
  train = helpers.random_batch(batch_size=3, seed=21)
  queries = helpers.random_batch(batch_size=2, seed=22)
  got = np.asarray(encoder.encode(queries, query=True).features) @ (
    np.asarray(encoder.encode(train).features).T
  )  # [queries, train]
  # A loop of jax.grad; V is Adam's nu, read from the optimizer state.
  model = model_lib.Transformer(helpers.TINY_MODEL)
  params = adam_state.params
  nu = jax.tree.leaves(optax.tree_utils.tree_get(adam_state.opt_state, "nu"))
  epsilon = config.correction.epsilon

  grad_fn = jax.jit(
    jax.grad(
      lambda p, ids, mask: model_lib.example_losses(model, p, ids, mask).sum()
    )
  )

  def gradients_of(batch, *, corrected):
    rows = []
    for i in range(batch.token_ids.shape[0]):
      leaves = jax.tree.leaves(
        grad_fn(params, batch.token_ids[i : i + 1], batch.loss_mask[i : i + 1])
      )
      if corrected:  # V^(-1/2) g
        leaves = [
          g / np.sqrt(v + epsilon) for g, v in zip(leaves, nu, strict=True)
        ]
      rows.append(np.concatenate([np.asarray(g).reshape(-1) for g in leaves]))
    return _unit_rows(np.stack(rows))

  train_side = gradients_of(train, corrected=True)
  query_side = gradients_of(queries, corrected=False)
  assert_close(got, query_side @ train_side.T, rtol=1e-3)
  two_sided = encoder_lib.from_checkpoint(
    _Loaded(adam_state),
    encoder_lib.preset(
      "trackstar_no_hessian", correction="adam", projection=whole
    ),
  )
  both = np.asarray(two_sided.encode(queries, query=True).features) @ (
    np.asarray(two_sided.encode(train).features).T
  )
  assert_close(
    both, gradients_of(queries, corrected=True) @ train_side.T, rtol=1e-3
  )
  assert np.abs(both - got).max() > 0.05  # The query side matters.


def test_trackstar_one_sided_projects_the_uncorrected_query_gradient(
  adafactor_state,
):
  spec = projection_lib.ProjectionSpec(allocation="equal", dim=256)
  encoder = encoder_lib.from_checkpoint(
    _Loaded(adafactor_state), _one_sided("adafactor", spec)
  )
  trackstar = encoder_lib.preset("trackstar", projection=spec)
  assert encoder.fingerprint == encoder_lib.make_fingerprint(
    checkpoint_digest="digest", config=trackstar, layout=encoder.layout
  )  # TrackStar's store serves it.
  assert all(fix is None for fix in encoder.query_correction.values())
  batch = helpers.random_batch(batch_size=3, seed=23)
  # The same projection of the materialised gradient, uncorrected.
  uncorrected = types.SimpleNamespace(
    apply_fn=encoder.apply_fn,
    params=encoder.params,
    config=encoder.config,
    layout=encoder.layout,
    matrices=encoder.matrices,
    correction=encoder.query_correction,
  )
  assert_close(
    np.asarray(encoder.features(batch, query=True).features),
    brute_force_features(uncorrected, batch),
  )
  assert_close(
    np.asarray(encoder.features(batch).features),
    brute_force_features(encoder, batch),
  )
  again = encoder.with_preconditioner(None)
  assert again.query_correction is encoder.query_correction


def test_a_query_correction_round_trips_and_old_dicts_load():
  config = encoder_lib.preset("trackstar_one_sided", correction="adam")
  assert encoder_lib.EncoderConfig.from_dict(config.to_dict()) == config
  assert json.loads(encoder_lib.query_correction_json(config))["kind"] == "none"
  old = encoder_lib.preset("trackstar").to_dict()
  del old["query_correction"]  # A manifest from before the field.
  loaded = encoder_lib.EncoderConfig.from_dict(old)
  assert loaded == encoder_lib.preset("trackstar")
  assert loaded.query_correction is None and not loaded.one_sided
  assert encoder_lib.query_correction_json(loaded) is None
  # A query correction equal to the corpus's is two-sided.
  same = dataclasses.replace(loaded, query_correction=loaded.correction)
  assert not same.one_sided
