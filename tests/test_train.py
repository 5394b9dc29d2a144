"""Training: sharded equals single-device, resume equals uninterrupted."""

import jax
import numpy as np
import pytest

from tests import helpers
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import partitioning
from trak_jax import train as train_lib


def _run_steps(mesh, num_steps: int):
  model_config = helpers.TINY_MODEL
  optimizer_config = helpers.tiny_optimizer("adamw")
  state = train_lib.init_state(model_config, optimizer_config, mesh, seed=3)
  step_fn = train_lib.make_train_step(model_config, optimizer_config, mesh)
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(num_steps):
    ids = rng.integers(4, model_config.vocab_size, (8, 32)).astype(np.int32)
    mask = np.ones((8, 32), np.float32)
    mask[:, 0] = 0
    state, loss = step_fn(state, data_lib.Batch(ids, mask))
    losses.append(float(loss))
  return losses, jax.device_get(state.params)


def test_sharded_train_step_matches_single_device():
  devices = jax.devices()
  assert len(devices) == 8, "conftest sets eight fake CPU devices"
  single = partitioning.make_mesh(devices=devices[:1])
  sharded = partitioning.make_mesh(data=4, model=2, devices=devices)
  losses_1, params_1 = _run_steps(single, num_steps=3)
  losses_8, params_8 = _run_steps(sharded, num_steps=3)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
    params_8,
    params_1,
  )


def test_parameters_are_sharded_on_the_model_axis():
  mesh = partitioning.make_mesh(data=4, model=2)
  state = train_lib.init_state(
    helpers.TINY_MODEL, helpers.tiny_optimizer(), mesh, seed=0
  )
  wi = state.params["block_0"]["wi"]["kernel"]
  assert wi.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  embedding = state.params["embed"]["embedding"]
  assert embedding.sharding.spec == jax.sharding.PartitionSpec("model", None)
  # Each device holds half of the MLP kernel's columns.
  shard = wi.addressable_shards[0].data
  assert shard.shape == (wi.shape[0], wi.shape[1] // 2)


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_optimizer_state_is_sharded_like_the_parameters(optimizer):
  mesh = partitioning.make_mesh(data=4, model=2)
  abstract, shardings = train_lib.abstract_state_and_shardings(
    helpers.TINY_MODEL, helpers.tiny_optimizer(optimizer), mesh
  )
  params = jax.tree_util.tree_leaves_with_path(abstract.params)
  param_shardings = jax.tree.leaves(shardings.params)
  by_path = {
    jax.tree_util.keystr(path): (leaf.shape, sharding)
    for (path, leaf), sharding in zip(params, param_shardings, strict=True)
  }
  leaves = jax.tree_util.tree_leaves_with_path(abstract.opt_state)
  opt_shardings = jax.tree.leaves(shardings.opt_state)
  mirrored = 0
  for (path, leaf), sharding in zip(leaves, opt_shardings, strict=True):
    key = jax.tree_util.keystr(path)
    owners = [s for k, (shape, s) in by_path.items() if key.endswith(k)]
    shaped = [
      s
      for k, (shape, s) in by_path.items()
      if key.endswith(k) and shape == leaf.shape
    ]
    if shaped:  # a moment that mirrors its parameter
      assert sharding == shaped[0], key
      mirrored += 1
    else:  # counts, factored rows and columns, placeholders
      assert sharding.spec == jax.sharding.PartitionSpec(), key
      assert owners or not leaf.shape or leaf.size <= 1, key
  assert mirrored > 0


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_resume_after_stop_equals_uninterrupted(tmp_path, optimizer):
  corpus = helpers.write_corpus(str(tmp_path / "corpus.jsonl"))
  kwargs = dict(
    corpus_path=corpus,
    model_config=helpers.TINY_MODEL,
    optimizer_config=helpers.tiny_optimizer(optimizer),
    train_config=helpers.tiny_train_config(num_steps=6),
    devices=jax.devices()[:1],
  )
  whole = train_lib.train(output_dir=str(tmp_path / "whole"), **kwargs)
  stopped = train_lib.train(
    output_dir=str(tmp_path / "split"), stop_after_steps=2, **kwargs
  )
  assert stopped.steps == 2
  resumed = train_lib.train(output_dir=str(tmp_path / "split"), **kwargs)
  assert resumed.steps == 4
  a = checkpoint_lib.load_checkpoint(whole.checkpoint_path)
  b = checkpoint_lib.load_checkpoint(resumed.checkpoint_path)
  assert int(a.state.step) == int(b.state.step) == 6
  # The resumed steps are compiled again: equal up to reduction order (a
  # lost optimizer state or a repeated batch would differ far more).
  helpers.assert_trees_close(jax.device_get(b.state), jax.device_get(a.state))


def test_finished_run_is_not_trained_again(tmp_path):
  corpus = helpers.write_corpus(str(tmp_path / "corpus.jsonl"))
  kwargs = dict(
    corpus_path=corpus,
    output_dir=str(tmp_path / "run"),
    model_config=helpers.TINY_MODEL,
    optimizer_config=helpers.tiny_optimizer(),
    train_config=helpers.tiny_train_config(num_steps=2),
    devices=jax.devices()[:1],
  )
  first = train_lib.train(**kwargs)
  again = train_lib.train(**kwargs)
  assert again.steps == 0
  assert again.checkpoint_path == first.checkpoint_path


def test_batch_indices_cover_each_epoch_once():
  seen = np.concatenate(
    [
      train_lib.batch_indices(s, num_examples=10, batch_size=5, seed=1)
      for s in range(4)
    ]
  )
  assert sorted(seen[:10]) == list(range(10))
  assert sorted(seen[10:]) == list(range(10))
  assert not np.array_equal(seen[:10], seen[10:])  # A new order per epoch.
  again = train_lib.batch_indices(3, num_examples=10, batch_size=5, seed=1)
  np.testing.assert_array_equal(again, seen[15:])


def test_training_lowers_the_loss(tmp_path):
  corpus = helpers.write_corpus(str(tmp_path / "corpus.jsonl"))
  result = train_lib.train(
    corpus_path=corpus,
    output_dir=str(tmp_path / "run"),
    model_config=helpers.TINY_MODEL,
    optimizer_config=helpers.tiny_optimizer(),
    train_config=helpers.tiny_train_config(num_steps=40, log_every=10),
    devices=jax.devices()[:1],
  )
  log = [
    __import__("json").loads(line)
    for line in open(tmp_path / "run" / "train_log.jsonl")
  ]
  assert [r["step"] for r in log] == [10, 20, 30, 40]
  assert log[-1]["loss"] < log[0]["loss"] - 0.3
  assert result.final_loss == pytest.approx(log[-1]["loss"], abs=1e-4)
