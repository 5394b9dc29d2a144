"""R, λ and R^(-1/2) against hand computations."""

import numpy as np
import pytest

from trak_jax import hessian as hessian_lib


def low_rank_r(dim=12, rank=5, seed=0):
  rng = np.random.default_rng(seed)
  basis = rng.normal(size=(dim, rank))
  return basis @ basis.T, basis


def test_inverse_sqrt_whitens_on_the_range():
  r, basis = low_rank_r()
  w = hessian_lib.inverse_sqrt(r, damping=0.0)
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
  w = hessian_lib.inverse_sqrt(r, damping=0.5)  # adds 1 to each
  np.testing.assert_allclose(np.diag(w), 1 / np.sqrt([5, 2, 2, 3]))


def test_auto_lambda_reproduces_a_hand_computed_case():
  r_train = np.diag([4.0, 3.0, 2.0, 1.0])
  r_eval = np.diag([1.0, 0.5, 0.25, 0.1])
  # k = 2: e_2(train) = 3, e_2(eval) = 0.5 -> λ = 3 / 3.5.
  mix = hessian_lib.auto_mix([r_train], [r_eval], k=2)
  assert mix == pytest.approx(3 / 3.5)
  assert mix * 0.5 == pytest.approx((1 - mix) * 3.0)  # The two meet.
  # Block-diagonal: eigenvalues are pooled over blocks.
  blocks = hessian_lib.auto_mix(
    [r_train[:2, :2], r_train[2:, 2:]], [r_eval[:2, :2], r_eval[2:, 2:]], k=2
  )
  assert blocks == pytest.approx(mix)


def test_fit_mixes_as_configured():
  rng = np.random.default_rng(1)
  train_phi, eval_phi = rng.normal(size=(50, 6)), rng.normal(size=(20, 6))
  train, evaluation = (
    hessian_lib.Autocorrelation([6]),
    hessian_lib.Autocorrelation([6]),
  )
  train.update(train_phi)
  evaluation.update(eval_phi)
  spec = hessian_lib.HessianSpec(
    kind="mixed", mix=0.25, damping=0.0, shrinkage="none"
  )
  fitted = hessian_lib.fit(spec, train, evaluation)
  r = 0.25 * eval_phi.T @ eval_phi / 20 + 0.75 * train_phi.T @ train_phi / 50
  w = np.asarray(fitted.preconditioner.blocks[0], np.float64)
  np.testing.assert_allclose(w @ r @ w, np.eye(6), atol=1e-4)
  assert fitted.mix == 0.25
  auto = hessian_lib.fit(
    hessian_lib.HessianSpec(kind="mixed", eigen_k=2), train, evaluation
  )
  expected = hessian_lib.auto_mix(train.mean(), evaluation.mean(), k=2)
  assert auto.mix == pytest.approx(expected) and auto.eigen_k == 2
  with pytest.raises(ValueError, match="R_eval"):
    hessian_lib.fit(spec, train, None)


def test_streamed_autocorrelation_equals_one_shot_and_blocks():
  phi = np.random.default_rng(2).normal(size=(30, 7)).astype(np.float32)
  full = hessian_lib.Autocorrelation([7])
  blocks = hessian_lib.Autocorrelation([3, 4])
  for start in range(0, 30, 8):
    full.update(phi[start : start + 8])
    blocks.update(phi[start : start + 8])
  exact = phi.astype(np.float64).T @ phi.astype(np.float64) / 30
  np.testing.assert_allclose(full.mean()[0], exact, rtol=1e-12)
  np.testing.assert_allclose(blocks.mean()[0], exact[:3, :3], rtol=1e-12)
  np.testing.assert_allclose(blocks.mean()[1], exact[3:, 3:], rtol=1e-12)
  assert full.sums[0].dtype == np.float64
  merged = hessian_lib.Autocorrelation([7])
  merged.update(phi[:10])
  rest = hessian_lib.Autocorrelation([7])
  rest.update(phi[10:])
  np.testing.assert_allclose(merged.merge(rest).mean()[0], exact, rtol=1e-12)


def test_apply_is_blockwise_and_save_load_round_trips(tmp_path):
  rng = np.random.default_rng(3)
  stats = hessian_lib.Autocorrelation([2, 3])
  stats.update(rng.normal(size=(40, 5)))
  spec = hessian_lib.HessianSpec(kind="train", block_diagonal=True)
  fitted = hessian_lib.fit(spec, stats)
  phi = rng.normal(size=(4, 5)).astype(np.float32)
  out = np.asarray(hessian_lib.apply(fitted.preconditioner, phi))
  blocks = [np.asarray(b) for b in fitted.preconditioner.blocks]
  np.testing.assert_allclose(out[:, :2], phi[:, :2] @ blocks[0], rtol=1e-5)
  np.testing.assert_allclose(out[:, 2:], phi[:, 2:] @ blocks[1], rtol=1e-5)
  hessian_lib.save(
    str(tmp_path),
    fitted,
    train_stats=stats,
    eval_stats=None,
    spec=spec,
    fingerprint={"dim": 5},
  )
  loaded, info = hessian_lib.load(str(tmp_path))
  assert info["fingerprint"] == {"dim": 5} and info["block_sizes"] == [2, 3]
  for a, b in zip(loaded.blocks, blocks, strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_full_r_refuses_a_huge_dimension():
  with pytest.raises(ValueError, match="block_diagonal"):
    hessian_lib.block_sizes(
      65536, [65536], hessian_lib.HessianSpec(block_diagonal=False)
    )
