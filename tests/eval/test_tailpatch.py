"""Tail-patch on a tiny model trained on a tiny FactBench corpus."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import helpers
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import partitioning
from trak_jax import train as train_lib
from trak_jax.eval import factbench, tailpatch

MODEL = dataclasses.replace(helpers.TINY_MODEL, vocab_size=512, max_len=128)
NUM_QUERIES = 10


@pytest.fixture(scope="module")
def mesh():
  return partitioning.make_mesh(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def bench():
  return factbench.generate(factbench.FactBenchConfig.tiny())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bench, mesh):
  """The final checkpoint of 80 AdamW steps on the FactBench corpus."""
  directory = tmp_path_factory.mktemp("tailpatch")
  paths = factbench.write_jsonl(bench, str(directory / "bench"))
  optimizer_config = optimizer_lib.OptimizerConfig(
    name="adamw", learning_rate=1e-2, warmup_steps=5, total_steps=80
  )
  result = train_lib.train(
    corpus_path=paths["corpus.jsonl"],
    output_dir=str(directory / "run"),
    model_config=MODEL,
    optimizer_config=optimizer_config,
    train_config=helpers.tiny_train_config(
      num_steps=80, seq_len=MODEL.max_len, log_every=40
    ),
    devices=jax.devices()[:1],
  )
  return checkpoint_lib.load_checkpoint(result.checkpoint_path, mesh=mesh)


@pytest.fixture(scope="module")
def patcher(checkpoint):
  # Two proponents a call, so three proponents take a padded second call.
  return tailpatch.TailPatcher.from_checkpoint(
    checkpoint, proponents_per_call=2
  )


@pytest.fixture(scope="module")
def sgd_patcher(checkpoint):
  return tailpatch.TailPatcher.from_checkpoint(
    checkpoint, optimizer="sgd", step_size=0.1, proponents_per_call=2
  )


@pytest.fixture(scope="module")
def adafactor_state(checkpoint):
  """(optimizer config, optax state) of Adafactor with made-up statistics.

  Any Adafactor state will do to compare against brute force: its factored
  second moments are drawn at random (on the host, so nothing compiles).
  """
  optimizer_config = helpers.tiny_optimizer("adafactor")
  tx = optimizer_lib.make_optimizer(optimizer_config)
  rng = np.random.default_rng(0)

  def made_up(leaf):
    leaf = np.asarray(leaf)
    if not np.issubdtype(leaf.dtype, np.floating):
      return leaf + 50  # step counts
    return rng.uniform(1e-4, 1e-2, leaf.shape).astype(leaf.dtype)

  opt_state = jax.tree.map(made_up, tx.init(checkpoint.params))
  return optimizer_config, opt_state


def _passage_text(bench, passage_id):
  return next(p.text for p in bench.passages if p.id == passage_id)


def _fact_and_filler(bench):
  """[(query, a passage stating its fact, a fact-free passage)]."""
  fillers = [p.text for p in bench.passages if not p.fact_ids]
  return [
    (query, _passage_text(bench, query.relevant_ids[0]), fillers[i])
    for i, query in enumerate(bench.queries[:NUM_QUERIES])
  ]


def _host_copy(tree):
  return jax.tree.map(lambda leaf: np.array(jax.device_get(leaf)), tree)


def _assert_bitwise_equal(tree, expected):
  jax.tree.map(np.testing.assert_array_equal, _host_copy(tree), expected)


def test_step_size_defaults_to_the_final_learning_rate(patcher, checkpoint):
  assert patcher.step_size == pytest.approx(
    checkpoint.optimizer_config.final_learning_rate
  )
  assert patcher.optimizer == "checkpoint"
  assert patcher.seq_len == MODEL.max_len


@pytest.mark.parametrize("name", ["patcher", "sgd_patcher"])
def test_fact_passage_helps_more_than_filler(request, bench, name):
  patcher = request.getfixturevalue(name)
  differences = []
  for query, fact, filler in _fact_and_filler(bench):
    fact_delta, filler_delta = patcher.deltas([fact, filler], query)
    differences.append(fact_delta - filler_delta)
  differences = np.asarray(differences)
  assert differences.mean() > 0
  assert (differences > 0).sum() > len(differences) / 2


def test_parameters_are_unchanged_after_every_patch(patcher, checkpoint, bench):
  params = _host_copy(checkpoint.params)
  opt_state = _host_copy(checkpoint.opt_state)
  cases = _fact_and_filler(bench)[:3]
  for query, fact, filler in cases:
    patcher.delta(fact, query)
    _assert_bitwise_equal(checkpoint.params, params)
    patcher.deltas([fact, filler, fact], query)
    _assert_bitwise_equal(checkpoint.params, params)
  patcher.mean_delta(
    [[fact, filler] for _, fact, filler in cases], [q for q, _, _ in cases]
  )
  _assert_bitwise_equal(checkpoint.params, params)
  _assert_bitwise_equal(checkpoint.opt_state, opt_state)


def _brute_force(tx):
  """`delta(params, opt_state, tokenizer, text, query)` in plain JAX: Δlog p
  of one `tx.update` and `optax.apply_updates` (`_brute_force_both`)."""

  def step(params, opt_state, grads):
    updates, _ = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates)

  both = _brute_force_both(step)
  return lambda *args: both(*args)[0]


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_delta_matches_brute_force(
  patcher, checkpoint, bench, adafactor_state, optimizer
):
  query, fact, filler = _fact_and_filler(bench)[0]
  params, opt_state = checkpoint.params, checkpoint.opt_state
  optimizer_config = checkpoint.optimizer_config
  if optimizer == "adafactor":
    optimizer_config, opt_state = adafactor_state
    patcher = tailpatch.TailPatcher(
      params,
      opt_state,
      MODEL,
      optimizer_config,
      checkpoint.tokenizer,
      step_size=3e-3,
      proponents_per_call=2,
    )
  constant = optax.constant_schedule(patcher.step_size)
  tx = optimizer_lib.make_optimizer(optimizer_config, learning_rate=constant)
  # Three proponents, two a call: the third is patched in a padded call.
  deltas = patcher.deltas([fact, filler, fact], query)
  brute_force = _brute_force(tx)
  expected = [
    brute_force(params, opt_state, checkpoint.tokenizer, text, query)
    for text in (fact, filler)
  ]
  assert abs(expected[0]) > 1e-4  # A real change, not rounding.
  np.testing.assert_allclose(
    deltas, [*expected, expected[0]], rtol=2e-3, atol=2e-6
  )


def test_checkpoint_step_is_the_next_training_step(
  patcher, checkpoint, bench, mesh
):
  # The checkpoint ends its schedule at total_steps, where the learning rate
  # is the final one: a training step on a batch of one proponent is exactly
  # the tail-patch step.
  assert int(checkpoint.state.step) == checkpoint.optimizer_config.total_steps
  query, fact, _ = _fact_and_filler(bench)[1]
  step_fn = train_lib.make_train_step(MODEL, checkpoint.optimizer_config, mesh)
  passage = data_lib.pad_batch(
    [data_lib.tokenize_text(checkpoint.tokenizer, fact, max_len=MODEL.max_len)],
    seq_len=MODEL.max_len,
  )
  state = jax.tree.map(lambda leaf: leaf.copy(), checkpoint.state)  # donated
  trained, _ = step_fn(state, passage)
  query_batch = data_lib.pad_batch(
    [
      data_lib.tokenize_query(
        checkpoint.tokenizer, query.prompt, query.target, max_len=MODEL.max_len
      )
    ],
    seq_len=MODEL.max_len,
  )
  model = model_lib.Transformer(MODEL)
  log_prob = lambda p: (
    -float(model_lib.example_losses(model, p, *query_batch)[0])
  )
  expected = log_prob(trained.params) - log_prob(checkpoint.params)
  assert patcher.delta(fact, query) == pytest.approx(expected, rel=2e-3)


def test_mean_delta_averages_the_top_proponents(patcher, bench):
  cases = _fact_and_filler(bench)[:2]
  queries = [query for query, _, _ in cases]
  proponents = [[fact, filler] for _, fact, filler in cases]
  deltas = [
    patcher.deltas(texts, q)
    for texts, q in zip(proponents, queries, strict=True)
  ]
  both = patcher.mean_delta(proponents, queries)
  np.testing.assert_allclose(both, [d.mean() for d in deltas], rtol=1e-6)
  first = patcher.mean_delta(proponents, queries, top=1)
  np.testing.assert_allclose(first, [d[0] for d in deltas], rtol=1e-6)
  empty = patcher.mean_delta([[], proponents[1]], queries)
  assert np.isnan(empty[0]) and empty[1] == pytest.approx(both[1])


def test_bad_options_and_states_are_rejected(checkpoint, adafactor_state):
  args = (
    checkpoint.params,
    checkpoint.opt_state,
    MODEL,
    checkpoint.optimizer_config,
    checkpoint.tokenizer,
  )
  with pytest.raises(ValueError, match="unknown optimizer"):
    tailpatch.TailPatcher(*args, optimizer="adam")
  with pytest.raises(ValueError, match="no optimizer state"):
    tailpatch.TailPatcher(*args[:1], None, *args[2:])
  _, adafactor_opt_state = adafactor_state
  with pytest.raises(ValueError, match="does not fit"):
    tailpatch.TailPatcher(*args[:1], adafactor_opt_state, *args[2:])
  with pytest.raises(ValueError, match="exceeds max_len"):
    tailpatch.TailPatcher(*args, seq_len=MODEL.max_len + 1)
  # Plain SGD needs no optimizer state.
  sgd = tailpatch.TailPatcher(*args[:1], None, *args[2:], optimizer="sgd")
  assert sgd.optimizer == "sgd"


def _brute_force_both(step):
  """`(dlogp, dp)(params, opt_state, tokenizer, text, query)` in plain JAX.

  `step(params, opt_state, grads) -> patched params` is written out by the
  test; one example, no vmap and no padding rows.
  """
  model = model_lib.Transformer(MODEL)

  def log_prob(params, ids, mask):
    return -model_lib.example_losses(model, params, ids[None], mask[None])[0]

  def mean_loss(params, ids, mask):
    logits = model.apply({"params": params}, ids[None])
    losses = model_lib.token_losses(logits, ids[None], mask[None])
    return losses.sum() / mask[1:].sum()

  @jax.jit
  def measure(params, opt_state, passage, query):
    grads = jax.grad(mean_loss)(params, *passage)
    patched = step(params, opt_state, grads)
    return log_prob(params, *query), log_prob(patched, *query)

  def both(params, opt_state, tokenizer, text, query):
    passage = data_lib.pad_batch(
      [data_lib.tokenize_text(tokenizer, text, max_len=MODEL.max_len)],
      seq_len=MODEL.max_len,
    )
    row = data_lib.tokenize_query(
      tokenizer, query.prompt, query.target, max_len=MODEL.max_len
    )
    query = data_lib.pad_batch([row], seq_len=MODEL.max_len)
    before, after = measure(
      params,
      opt_state,
      (passage.token_ids[0], passage.loss_mask[0]),
      (query.token_ids[0], query.loss_mask[0]),
    )
    before, after = float(before), float(after)
    return after - before, np.exp(after) - np.exp(before)

  return both


def _adamw_step(config, step_size, *, clip):
  """AdamW's update from its state, written out, with or without the clip."""

  def step(params, opt_state, grads):
    if clip:
      norm = optax.global_norm(grads)
      scale = jnp.minimum(1.0, config.clip_norm / norm)
      grads = jax.tree.map(lambda g: g * scale, grads)
    adam = opt_state[1][0]  # chain(clip, adamw) -> adamw's scale_by_adam
    count = adam.count + 1
    mu = jax.tree.map(
      lambda m, g: config.b1 * m + (1 - config.b1) * g, adam.mu, grads
    )
    nu = jax.tree.map(
      lambda v, g: config.b2 * v + (1 - config.b2) * g * g, adam.nu, grads
    )
    mu_hat = jax.tree.map(lambda m: m / (1 - config.b1**count), mu)
    nu_hat = jax.tree.map(lambda v: v / (1 - config.b2**count), nu)
    return jax.tree.map(
      lambda p, m, v: (
        p - step_size * (m / (jnp.sqrt(v) + 1e-8) + config.weight_decay * p)
      ),
      params,
      mu_hat,
      nu_hat,
    )

  return step


@pytest.fixture(scope="module")
def variant_patchers(checkpoint):
  return {
    optimizer: tailpatch.TailPatcher.from_checkpoint(
      checkpoint,
      optimizer=optimizer,
      step_size=0.1 if optimizer == "sgd" else None,
      proponents_per_call=2,
    )
    for optimizer in tailpatch.OPTIMIZERS
  }


@pytest.mark.parametrize("optimizer", tailpatch.OPTIMIZERS)
def test_every_variant_matches_a_step_written_out(
  variant_patchers, checkpoint, bench, optimizer
):
  patcher = variant_patchers[optimizer]
  config = checkpoint.optimizer_config
  if optimizer == "sgd":
    step = lambda p, _, g: jax.tree.map(
      lambda w, d: w - patcher.step_size * d, p, g
    )
  else:
    step = _adamw_step(
      config, patcher.step_size, clip=optimizer == "checkpoint"
    )
  params = _host_copy(checkpoint.params)
  opt_state = _host_copy(checkpoint.opt_state)
  query, fact, filler = _fact_and_filler(bench)[0]
  changes = patcher.changes([fact, filler, fact], query)
  brute_force = _brute_force_both(step)
  expected = np.array(
    [
      brute_force(
        checkpoint.params, checkpoint.opt_state, checkpoint.tokenizer, t, query
      )
      for t in (fact, filler, fact)
    ]
  )  # [3, (dlogp, dp)]
  assert abs(expected[0, 0]) > 1e-4  # A real change, not rounding.
  np.testing.assert_allclose(
    changes["dlogp"], expected[:, 0], rtol=3e-3, atol=3e-6
  )
  np.testing.assert_allclose(
    changes["dp"], expected[:, 1], rtol=3e-3, atol=3e-7
  )
  _assert_bitwise_equal(checkpoint.params, params)
  _assert_bitwise_equal(checkpoint.opt_state, opt_state)


def test_the_clip_changes_the_step(variant_patchers, bench):
  # Proponent gradients of the tiny model exceed clip_norm = 1, so the
  # unclipped step is a different (larger) step.
  query, fact, _ = _fact_and_filler(bench)[0]
  clipped = variant_patchers["checkpoint"].delta(fact, query)
  unclipped = variant_patchers["checkpoint_noclip"].delta(fact, query)
  assert abs(unclipped - clipped) > 1e-3 * abs(clipped)


def test_top_k_means_of_hand_made_deltas():
  deltas = [4.0, 2.0, 0.0, -1.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 99.0]
  means = tailpatch.top_k_means(deltas)
  assert means == {1: 4.0, 3: 2.0, 5: 2.0, 10: 1.5}
  assert tailpatch.top_k_means([3.0, 1.0], ks=(1, 10)) == {1: 3.0, 10: 2.0}
  assert all(np.isnan(v) for v in tailpatch.top_k_means([]).values())
  with pytest.raises(ValueError, match="at least 1"):
    tailpatch.top_k_means([1.0], ks=(0,))
