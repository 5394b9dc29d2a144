"""R, λ and R^(-1/2) against hand computations."""

import numpy as np
import pytest

from trak_jax import hessian as hessian_core


def low_rank_r(dim=12, rank=5, seed=0):
  rng = np.random.default_rng(seed)
  basis = rng.normal(size=(dim, rank))
  return basis @ basis.T, basis


def test_inverse_sqrt_whitens_on_the_range():
  r, basis = low_rank_r()
  w = hessian_core.inverse_sqrt(r, damping=0.0)
  whitened = w @ r @ w
  # Identity on R's range, zero on its null space.
  projector = basis @ np.linalg.pinv(basis)
  np.testing.assert_allclose(whitened, projector, atol=1e-8)
  in_range = basis @ np.array([1.0, -2.0, 0.5, 3.0, 1.0])
  np.testing.assert_allclose(whitened @ in_range, in_range, atol=1e-8)
  null = np.linalg.svd(basis.T)[2][-1]
  np.testing.assert_allclose(whitened @ null, 0, atol=1e-8)


def test_damping_is_relative_to_the_mean_eigenvalue():
  r = np.diag([4.0, 1.0, 1.0, 2.0])  # mean eigenvalue 2
  w = hessian_core.inverse_sqrt(r, damping=0.5)  # adds 1 to each
  np.testing.assert_allclose(np.diag(w), 1 / np.sqrt([5, 2, 2, 3]))


def test_auto_lambda_reproduces_a_hand_computed_case():
  r_train = np.diag([4.0, 3.0, 2.0, 1.0])
  r_eval = np.diag([1.0, 0.5, 0.25, 0.1])
  # k = 2: e_2(train) = 3, e_2(eval) = 0.5 -> λ = 3 / 3.5.
  mix = hessian_core.auto_mix([r_train], [r_eval], k=2)
  assert mix == pytest.approx(3 / 3.5)
  assert mix * 0.5 == pytest.approx((1 - mix) * 3.0)  # The two meet.
  # Block-diagonal: eigenvalues are pooled over blocks.
  blocks = hessian_core.auto_mix(
    [r_train[:2, :2], r_train[2:, 2:]], [r_eval[:2, :2], r_eval[2:, 2:]], k=2
  )
  assert blocks == pytest.approx(mix)


def test_fit_mixes_as_configured():
  rng = np.random.default_rng(1)
  train_phi, eval_phi = rng.normal(size=(50, 6)), rng.normal(size=(20, 6))
  train, evaluation = (
    hessian_core.Autocorrelation([6]),
    hessian_core.Autocorrelation([6]),
  )
  train.update(train_phi)
  evaluation.update(eval_phi)
  spec = hessian_core.HessianSpec(
    kind="mixed",
    mix=0.25,
    damping=0.0,
    shrinkage="none",
    eval_directions="all",
  )
  fitted = hessian_core.fit(spec, train, evaluation)
  r = 0.25 * eval_phi.T @ eval_phi / 20 + 0.75 * train_phi.T @ train_phi / 50
  w = np.asarray(fitted.preconditioner.blocks[0], np.float64)
  np.testing.assert_allclose(w @ r @ w, np.eye(6), atol=1e-4)
  assert fitted.mix == 0.25
  auto = hessian_core.fit(
    hessian_core.HessianSpec(kind="mixed", eigen_k=2, eval_directions="all"),
    train,
    evaluation,
  )
  expected = hessian_core.auto_mix(train.mean(), evaluation.mean(), k=2)
  assert auto.mix == pytest.approx(expected) and auto.eigen_k == 2
  with pytest.raises(ValueError, match="R_eval"):
    hessian_core.fit(spec, train, None)


def _queries_with_a_common_direction(count=40, dim=30, seed=3):
  """Query φ: a shared direction plus each query's own orthogonal one."""
  rng = np.random.default_rng(seed)
  basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
  common, own = basis[:, 0], basis[:, 1:]
  rows = [
    2.0 * common + own[:, i % own.shape[1]] * rng.uniform(0.5, 1.5)
    for i in range(count)
  ]
  return np.stack(rows), common


def test_shared_directions_keep_what_queries_have_in_common():
  phi, common = _queries_with_a_common_direction()
  stats = hessian_core.Autocorrelation([phi.shape[1]])
  stats.update(phi)
  (kept,), count = hessian_core.shared_directions(stats.mean(), stats.count)
  assert count == 1
  # The one direction kept is the common one, with its whole eigenvalue.
  values, vectors = np.linalg.eigh(kept)
  assert abs(vectors[:, -1] @ common) > 0.99
  assert values[-1] == pytest.approx(np.linalg.eigvalsh(stats.mean()[0])[-1])
  np.testing.assert_allclose(values[:-1], 0, atol=1e-9)


def test_a_shared_r_eval_leaves_each_querys_own_direction_unwhitened():
  phi, common = _queries_with_a_common_direction()
  # Passages' φ far smaller than the queries' (their loss is low), as in a
  # trained model: R_eval's own-query directions then outweigh R_train's.
  train_phi = 0.05 * np.random.default_rng(4).normal(size=(200, phi.shape[1]))
  train, evaluation = (
    hessian_core.Autocorrelation([phi.shape[1]]),
    hessian_core.Autocorrelation([phi.shape[1]]),
  )
  train.update(train_phi)
  evaluation.update(phi)
  gains = {}
  for directions in ("shared", "all"):
    spec = hessian_core.HessianSpec(
      mix=0.5, shrinkage="none", eval_directions=directions
    )
    fitted = hessian_core.fit(spec, train, evaluation)
    w = np.asarray(fitted.preconditioner.blocks[0], np.float64)
    own = phi[0] - (phi[0] @ common) * common
    gains[directions] = np.linalg.norm(w @ own) / np.linalg.norm(w @ common)
  assert fitted.diagnostics.get("eval_shared_directions") is None
  # Both down-weight the common direction; only "all" also shrinks the
  # query's own direction towards it.
  assert gains["shared"] > 2 * gains["all"]


def test_old_encoder_configs_mix_in_all_of_r_eval():
  from trak_jax import encoder as encoder_lib

  values = encoder_lib.preset("trackstar").to_dict()
  del values["hessian"]["eval_directions"]
  old = encoder_lib.EncoderConfig.from_dict(values)
  assert old.hessian.eval_directions == "all"
  assert encoder_lib.preset("trackstar").hessian.eval_directions == "shared"


def test_streamed_autocorrelation_equals_one_shot_and_blocks():
  phi = np.random.default_rng(2).normal(size=(30, 7)).astype(np.float32)
  full = hessian_core.Autocorrelation([7])
  blocks = hessian_core.Autocorrelation([3, 4])
  for start in range(0, 30, 8):
    full.update(phi[start : start + 8])
    blocks.update(phi[start : start + 8])
  exact = phi.astype(np.float64).T @ phi.astype(np.float64) / 30
  np.testing.assert_allclose(full.mean()[0], exact, rtol=1e-12)
  np.testing.assert_allclose(blocks.mean()[0], exact[:3, :3], rtol=1e-12)
  np.testing.assert_allclose(blocks.mean()[1], exact[3:, 3:], rtol=1e-12)
  assert full.sums[0].dtype == np.float64
  merged = hessian_core.Autocorrelation([7])
  merged.update(phi[:10])
  rest = hessian_core.Autocorrelation([7])
  rest.update(phi[10:])
  np.testing.assert_allclose(merged.merge(rest).mean()[0], exact, rtol=1e-12)


def test_apply_is_blockwise_and_save_load_round_trips(tmp_path):
  rng = np.random.default_rng(3)
  stats = hessian_core.Autocorrelation([2, 3])
  stats.update(rng.normal(size=(40, 5)))
  spec = hessian_core.HessianSpec(kind="train", block_diagonal=True)
  fitted = hessian_core.fit(spec, stats)
  phi = rng.normal(size=(4, 5)).astype(np.float32)
  out = np.asarray(hessian_core.apply(fitted.preconditioner, phi))
  blocks = [np.asarray(b) for b in fitted.preconditioner.blocks]
  np.testing.assert_allclose(out[:, :2], phi[:, :2] @ blocks[0], rtol=1e-5)
  np.testing.assert_allclose(out[:, 2:], phi[:, 2:] @ blocks[1], rtol=1e-5)
  hessian_core.save(
    str(tmp_path),
    fitted,
    train_stats=stats,
    eval_stats=None,
    spec=spec,
    fingerprint={"dim": 5},
  )
  loaded, info = hessian_core.load(str(tmp_path))
  assert info["fingerprint"] == {"dim": 5} and info["block_sizes"] == [2, 3]
  for a, b in zip(loaded.blocks, blocks, strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_full_r_refuses_a_huge_dimension():
  with pytest.raises(ValueError, match="block_diagonal"):
    hessian_core.block_sizes(
      65536, [65536], hessian_core.HessianSpec(block_diagonal=False)
    )


def _stats(phi, sizes):
  stats = hessian_core.Autocorrelation(sizes)
  stats.update(phi)
  return stats


def test_fewer_queries_than_k_gives_a_finite_mix_and_a_warning():
  rng = np.random.default_rng(4)
  train = _stats(rng.normal(size=(200, 16)), [16])
  evaluation = _stats(rng.normal(size=(3, 16)), [16])  # rank 3 < k = 8
  spec = hessian_core.HessianSpec(eigen_k=8, eval_directions="all")
  with pytest.warns(hessian_core.HessianWarning, match="exceeds the rank"):
    fitted = hessian_core.fit(spec, train, evaluation)
  assert 0.0 <= fitted.mix <= 1.0 and fitted.eigen_k == 3
  assert fitted.diagnostics["rank_eval"] == 3
  assert fitted.diagnostics["rank_train"] == 16
  for block in fitted.preconditioner.blocks:
    assert np.isfinite(np.asarray(block)).all()
  # Without the cap, the 8th eigenvalue of a rank-3 R_eval is zero and λ
  # would be 1: R = R_eval, singular.
  uncapped = hessian_core.auto_mix(train.mean(), evaluation.mean(), k=8)
  assert uncapped == pytest.approx(1.0)


def test_blocks_are_split_so_each_has_more_samples_than_dimensions():
  spec = hessian_core.HessianSpec()
  # 300 samples, 2 per dimension: no block above 150.
  sizes = hessian_core.block_sizes(
    1000, [600, 100, 300], spec, train_examples=300
  )
  assert sum(sizes) == 1000 and max(sizes) <= 150
  assert sizes[:4] == [150, 150, 150, 150]
  # A full R only when the sample supports it.
  assert hessian_core.block_sizes(100, [60, 40], spec, train_examples=300) == [
    100
  ]
  assert hessian_core.block_sizes(100, [60, 40], spec, train_examples=150) == [
    60,
    40,
  ]


def test_a_rank_deficient_block_is_named_in_a_warning():
  rng = np.random.default_rng(5)
  train = _stats(rng.normal(size=(5, 12)), [4, 8])  # 5 samples, block of 8
  with pytest.warns(hessian_core.HessianWarning, match="more dimensions"):
    fitted = hessian_core.fit(hessian_core.HessianSpec(kind="train"), train)
  assert any("up to 8" in w for w in fitted.diagnostics["warnings"])


def test_ledoit_wolf_matches_its_formula_and_shrinks_small_samples_more():
  rng = np.random.default_rng(6)
  phi = rng.normal(size=(40, 6)) * np.array([3.0, 2.0, 1.0, 1.0, 0.5, 0.2])
  stats = _stats(phi, [6])
  sample = phi.T @ phi / 40
  # β² = (1/n²) Σ_i ‖x_i x_iᵀ − S‖_F², by brute force.
  beta = sum(((np.outer(x, x) - sample) ** 2).sum() for x in phi) / 40**2
  np.testing.assert_allclose(stats.sampling_error()[0], beta, rtol=1e-10)
  mu = np.trace(sample) / 6
  alpha = beta / ((sample - mu * np.eye(6)) ** 2).sum()
  shrunk, weight = hessian_core.ledoit_wolf(sample, stats.sampling_error()[0])
  assert weight == pytest.approx(min(alpha, 1.0))
  np.testing.assert_allclose(
    shrunk, (1 - weight) * sample + weight * mu * np.eye(6), rtol=1e-12
  )
  few = _stats(phi[:8], [6])
  _, few_weight = hessian_core.ledoit_wolf(
    few.mean()[0], few.sampling_error()[0]
  )
  assert few_weight > weight


def test_fit_records_its_diagnostics_in_hessian_json(tmp_path):
  rng = np.random.default_rng(7)
  train = _stats(rng.normal(size=(100, 8)), [4, 4])
  evaluation = _stats(rng.normal(size=(10, 8)), [4, 4])
  fitted = hessian_core.fit(hessian_core.HessianSpec(), train, evaluation)
  info = hessian_core.save(
    str(tmp_path),
    fitted,
    train_stats=train,
    eval_stats=evaluation,
    spec=hessian_core.HessianSpec(),
    fingerprint={},
  )
  _, loaded = hessian_core.load(str(tmp_path))
  assert loaded == info
  for key in ("rank_train", "rank_eval", "eigen_k_asked", "shrinkage"):
    assert key in loaded
  assert len(loaded["shrinkage"]) == 2 and loaded["eigen_k"] >= 1
  assert loaded["preconditioner_digest"] == hessian_core.preconditioner_digest(
    fitted.preconditioner
  )
