"""Orbax checkpoints: optimizer statistics, tokenizer, metadata, sharding."""

import dataclasses
import os

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from tests import helpers
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import partitioning
from trak_jax import tokenizer as tokenizer_lib
from trak_jax import train as train_lib

OPTIMIZERS = ("adamw", "adafactor")
# The second-moment statistics the encoder reads (DESIGN.md section 1, "V").
STATISTICS = {"adamw": ("nu",), "adafactor": ("v_row", "v_col")}
NUM_STEPS = 4
TEXTS = ("the capital of Norway is Oslo", "Paris is a large old city in France")


def _statistics(opt_state, name: str) -> list:
  """The one subtree called `name` in an optax state, on the host."""
  found = optax.tree_utils.tree_get_all_with_path(opt_state, name)
  assert len(found) == 1, f"{name}: {[path for path, _ in found]}"
  return jax.device_get(found[0][1])


def _assert_trees_equal(actual, expected) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


def _assert_statistics_equal(
  actual_state, expected_state, optimizer: str, *, compare=_assert_trees_equal
):
  for name in STATISTICS[optimizer]:
    expected = _statistics(expected_state, name)
    compare(_statistics(actual_state, name), expected)
    # After a few steps the statistics are not all zero, so the comparison
    # is not vacuous.
    assert max(float(np.abs(x).max()) for x in jax.tree.leaves(expected)) > 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
  """One short training run per optimizer, checkpointed at steps 2 and 4."""
  root = tmp_path_factory.mktemp("runs")
  corpus = helpers.write_corpus(str(root / "corpus.jsonl"), num_examples=24)
  results = {}
  for optimizer in OPTIMIZERS:
    results[optimizer] = train_lib.train(
      corpus_path=corpus,
      output_dir=str(root / optimizer),
      model_config=helpers.TINY_MODEL,
      optimizer_config=helpers.tiny_optimizer(optimizer),
      train_config=helpers.tiny_train_config(
        num_steps=NUM_STEPS, checkpoint_every=2, log_every=2
      ),
      devices=jax.devices()[:1],
    )
  return {"corpus": corpus, "results": results}


def _run_tokenizer(output_dir: str) -> tokenizer_lib.Tokenizer:
  with open(os.path.join(output_dir, "tokenizer.model"), "rb") as f:
    return tokenizer_lib.Tokenizer(f.read())


def _rerun(corpus_path: str, output_dir: str, model_config, optimizer: str):
  """The training run's steps again, by hand, from its data and tokenizer."""
  cfg = helpers.tiny_train_config(num_steps=NUM_STEPS)
  tokenizer = _run_tokenizer(output_dir)
  optimizer_config = helpers.tiny_optimizer(optimizer)
  examples = list(data_lib.read_corpus(corpus_path))
  corpus = train_lib.tokenize_corpus(examples, tokenizer, seq_len=cfg.seq_len)
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  state = train_lib.init_state(
    model_config, optimizer_config, mesh, seed=cfg.seed
  )
  step_fn = train_lib.make_train_step(model_config, optimizer_config, mesh)
  for step in range(NUM_STEPS):
    idx = train_lib.batch_indices(
      step,
      num_examples=len(examples),
      batch_size=cfg.batch_size,
      seed=cfg.seed,
    )
    batch = data_lib.Batch(corpus.token_ids[idx], corpus.loss_mask[idx])
    state, _ = step_fn(state, batch)
  return jax.device_get(state)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_trained_checkpoint_holds_the_optimizer_statistics(runs, optimizer):
  result = runs["results"][optimizer]
  loaded = checkpoint_lib.load_checkpoint(
    result.output_dir, mesh=partitioning.make_mesh(devices=jax.devices()[:1])
  )
  assert int(loaded.state.step) == NUM_STEPS
  expected = _rerun(
    runs["corpus"], result.output_dir, loaded.model_config, optimizer
  )
  # A rerun of the steps, compiled again: equal up to reduction order.
  _assert_statistics_equal(
    loaded.opt_state,
    expected.opt_state,
    optimizer,
    compare=helpers.assert_trees_close,
  )
  helpers.assert_trees_close(jax.device_get(loaded.params), expected.params)


def _tokenizer() -> tokenizer_lib.Tokenizer:
  texts = [" ".join(helpers.WORDS[i:] + helpers.WORDS[:i]) for i in range(30)]
  return tokenizer_lib.Tokenizer(
    tokenizer_lib.train_sentencepiece(texts, vocab_size=48)
  )


def _randomized(state, *, seed: int, step: int):
  """`state` on the host with every float leaf random, so that a mixed-up or
  zero leaf shows; the step set to `step`."""
  rng = np.random.default_rng(seed)

  def fill(leaf):
    leaf = np.asarray(leaf)
    if not np.issubdtype(leaf.dtype, np.floating):
      return leaf
    return rng.uniform(0.5, 2.0, leaf.shape).astype(leaf.dtype)

  state = jax.tree.map(fill, jax.device_get(state))
  return state._replace(step=np.asarray(step, np.int32))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
  """Per optimizer: a state saved by hand with `CheckpointWriter.save`."""
  root = tmp_path_factory.mktemp("saved")
  model_config = helpers.TINY_MODEL  # vocab_size=64 splits over `model`.
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  tokenizer = _tokenizer()
  runs = {}
  for number, optimizer in enumerate(OPTIMIZERS):
    optimizer_config = helpers.tiny_optimizer(optimizer)
    state = train_lib.init_state(model_config, optimizer_config, mesh, seed=1)
    state = _randomized(state, seed=number, step=3)
    writer = checkpoint_lib.CheckpointWriter(str(root / optimizer))
    try:
      path = writer.save(
        state,
        model_config=model_config,
        optimizer_config=optimizer_config,
        tokenizer=tokenizer,
        extra_metadata={"note": "saved by hand"},
      )
    finally:
      writer.close()
    assert path == str(root / optimizer / "3")
    runs[optimizer] = dict(
      path=str(root / optimizer),
      state=state,
      model_config=model_config,
      optimizer_config=optimizer_config,
      tokenizer=tokenizer,
    )
  return runs


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_saved_state_restores_exactly(saved, optimizer):
  run = saved[optimizer]
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  loaded = checkpoint_lib.load_checkpoint(run["path"], mesh=mesh)
  _assert_statistics_equal(loaded.opt_state, run["state"].opt_state, optimizer)
  _assert_trees_equal(jax.device_get(loaded.state), run["state"])
  assert loaded.metadata["note"] == "saved by hand"
  assert loaded.metadata["step"] == 3
  assert loaded.model_config == run["model_config"]
  assert loaded.optimizer_config == run["optimizer_config"]
  assert loaded.digest == checkpoint_lib.params_digest(run["state"].params)
  assert loaded.tokenizer.model_proto == run["tokenizer"].model_proto
  for text in TEXTS:
    assert loaded.tokenizer.encode(text) == run["tokenizer"].encode(text)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_metadata_and_tokenizer_of_a_trained_checkpoint(runs, optimizer):
  result = runs["results"][optimizer]
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  loaded = checkpoint_lib.load_checkpoint(result.checkpoint_path, mesh=mesh)
  tokenizer = _run_tokenizer(result.output_dir)
  # The model embeds every token; all else is the configured shape.
  assert loaded.model_config.vocab_size >= tokenizer.vocab_size
  model_config = dataclasses.replace(
    helpers.TINY_MODEL, vocab_size=loaded.model_config.vocab_size
  )
  assert loaded.params["embed"]["embedding"].shape == (
    model_config.vocab_size,
    model_config.d_model,
  )
  optimizer_config = helpers.tiny_optimizer(optimizer)
  metadata = loaded.metadata
  assert metadata["step"] == NUM_STEPS
  assert metadata["model_config"] == model_config.to_dict()
  assert metadata["optimizer_config"] == optimizer_config.to_dict()
  assert metadata["train_config"]["num_steps"] == NUM_STEPS
  assert metadata["corpus_path"] == os.path.abspath(runs["corpus"])
  assert loaded.model_config == model_config
  assert loaded.optimizer_config == optimizer_config
  digest = checkpoint_lib.params_digest(loaded.params)
  assert metadata["params_digest"] == loaded.digest == digest
  # The digest sees a change of a single parameter value.
  changed = jax.tree.map(np.array, jax.device_get(loaded.params))
  changed["final_norm"]["scale"][0] += 1e-3
  assert checkpoint_lib.params_digest(changed) != digest
  # The restored tokenizer encodes like the run's.
  assert loaded.tokenizer.model_proto == tokenizer.model_proto
  for text in (*TEXTS, *(e.text for e in data_lib.read_corpus(runs["corpus"]))):
    assert loaded.tokenizer.encode(text) == tokenizer.encode(text)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_loading_onto_a_model_parallel_mesh_shards_parameters(saved, optimizer):
  run = saved[optimizer]
  mesh = partitioning.make_mesh(data=4, model=2)
  loaded = checkpoint_lib.load_checkpoint(run["path"], mesh=mesh)
  wi = loaded.params["block_0"]["wi"]["kernel"]
  assert wi.sharding.mesh == mesh
  assert wi.sharding.spec == PartitionSpec(None, "model")
  assert wi.addressable_shards[0].data.shape == (wi.shape[0], wi.shape[1] // 2)
  embedding = loaded.params["embed"]["embedding"]
  assert embedding.sharding.spec == PartitionSpec("model", None)
  query = loaded.params["block_1"]["attention"]["query"]["kernel"]
  assert query.sharding.spec == PartitionSpec(None, "model")
  if optimizer == "adamw":  # Adam's moments are sharded like the parameters.
    nu = optax.tree_utils.tree_get(loaded.opt_state, "nu")
    assert nu["block_0"]["wi"]["kernel"].sharding == wi.sharding
  _assert_trees_equal(jax.device_get(loaded.state), run["state"])


def test_model_parallel_run_checkpoints_sharded_parameters(runs, tmp_path):
  result = train_lib.train(
    corpus_path=runs["corpus"],
    output_dir=str(tmp_path / "run"),
    model_config=helpers.TINY_MODEL,
    optimizer_config=helpers.tiny_optimizer("adamw"),
    train_config=helpers.tiny_train_config(
      num_steps=1, mesh_data=4, mesh_model=2
    ),
  )
  mesh = partitioning.make_mesh(data=4, model=2)
  loaded = checkpoint_lib.load_checkpoint(result.output_dir, mesh=mesh)
  embedding = loaded.params["embed"]["embedding"]
  assert embedding.sharding.spec == PartitionSpec("model", None)


def test_missing_directory_is_named(tmp_path):
  missing = str(tmp_path / "no" / "such" / "run")
  with pytest.raises(FileNotFoundError, match=missing):
    checkpoint_lib.load_checkpoint(missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=str(empty)):
    checkpoint_lib.load_checkpoint(str(empty))


def test_steps_are_found_by_path_or_number(runs):
  result = runs["results"]["adamw"]
  checkpoints = os.path.join(result.output_dir, "checkpoints")
  assert result.checkpoint_path == os.path.join(checkpoints, str(NUM_STEPS))
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  for path, step, expected in [
    (result.output_dir, None, NUM_STEPS),
    (checkpoints, None, NUM_STEPS),
    (os.path.join(checkpoints, "2"), None, 2),
    (result.output_dir, 2, 2),
  ]:
    loaded = checkpoint_lib.load_checkpoint(path, mesh=mesh, step=step)
    assert int(loaded.state.step) == expected
    assert loaded.path == os.path.join(checkpoints, str(expected))
  with pytest.raises(FileNotFoundError) as raised:
    checkpoint_lib.load_checkpoint(result.output_dir, mesh=mesh, step=3)
  message = str(raised.value)
  assert "no step 3" in message and "[2, 4]" in message
  assert checkpoints in message


def test_remote_checkpoint_paths_resolve_without_going_local():
  """gs:// (here ram://, TF's in-memory filesystem) paths are found with
  tf.io.gfile and handed to Orbax as they are, never made local."""
  import tensorflow as tf

  run = "ram://checkpoint_test/run"
  for step in (2, 4):
    tf.io.gfile.makedirs(f"{run}/checkpoints/{step}/state")
  checkpoints = f"{run}/checkpoints"
  assert checkpoint_lib.resolve_checkpoint_dir(run) == (checkpoints, 4)
  assert checkpoint_lib.resolve_checkpoint_dir(f"{run}/") == (checkpoints, 4)
  assert checkpoint_lib.resolve_checkpoint_dir(f"{checkpoints}/2") == (
    checkpoints,
    2,
  )
  with pytest.raises(FileNotFoundError, match="no step 3 .* \\[2, 4\\]"):
    checkpoint_lib.resolve_checkpoint_dir(run, step=3)
  with pytest.raises(FileNotFoundError, match="ram://checkpoint_test/none"):
    checkpoint_lib.resolve_checkpoint_dir("ram://checkpoint_test/none")
