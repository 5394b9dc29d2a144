"""Pretraining: a sharded, jitted train step and a resumable training loop.

The batch for step s is a pure function of (seed, s): every epoch is a
seeded permutation of the corpus. A run that is stopped and restarted from
its last checkpoint therefore sees the same batches, and reaches the same
parameters, as a run that never stopped.
"""

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm import tqdm

from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import files, partitioning
from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import tokenizer as tokenizer_lib
from trak_jax import train_state as train_state_lib

TrainState = train_state_lib.TrainState
abstract_state_and_shardings = train_state_lib.abstract_state_and_shardings


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How long and on what to train.

  Attributes:
    num_steps: Optimizer steps in the whole run.
    batch_size: Examples per step (global, over all devices).
    seq_len: Tokens per example after padding/truncation.
    seed: Seeds parameter init and data order.
    checkpoint_every: Save every this many steps (and at the end).
    log_every: Log loss and tokens/s every this many steps.
    mesh_data: Size of the mesh's `data` axis (-1: the rest).
    mesh_model: Size of the mesh's `model` axis.
    skip_malformed: Skip malformed corpus lines (counted) instead of failing.
  """

  num_steps: int = 1000
  batch_size: int = 32
  seq_len: int = 64
  seed: int = 0
  checkpoint_every: int = 500
  log_every: int = 50
  mesh_data: int = -1
  mesh_model: int = 1
  skip_malformed: bool = False


class TrainResult(NamedTuple):
  output_dir: str  # the run's directory (tokenizer, checkpoints, logs)
  checkpoint_path: str  # the final step directory
  final_loss: float  # mean token loss of the last logged window
  steps: int  # steps run in this call
  seconds: float  # wall time of the steps run in this call
  tokens_per_second: float  # non-padding tokens / s in this call


def _boxed_init_fn(model: model_lib.Transformer, seq_len: int):
  def init(key):
    ids = jnp.zeros((1, seq_len), jnp.int32)
    return model.init(key, ids)["params"]

  return init


def init_state(
  model_config: model_lib.ModelConfig,
  optimizer_config: optimizer_lib.OptimizerConfig,
  mesh: Mesh,
  *,
  seed: int,
) -> TrainState:
  """A fresh `TrainState`, initialised directly in its sharded layout."""
  model = model_lib.Transformer(model_config)
  _, shardings = abstract_state_and_shardings(
    model_config, optimizer_config, mesh
  )
  params, _ = partitioning.init_sharded(
    _boxed_init_fn(model, model_config.max_len),
    jax.random.fold_in(jax.random.key(seed), 0),
    mesh=mesh,
  )
  tx = optimizer_lib.make_optimizer(optimizer_config)
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=params, opt_state=opt_state)


def make_train_step(
  model_config: model_lib.ModelConfig,
  optimizer_config: optimizer_lib.OptimizerConfig,
  mesh: Mesh,
) -> Callable[[TrainState, data_lib.Batch], tuple[TrainState, jax.Array]]:
  """A jitted step: (state, batch) -> (new state, mean token loss).

  The batch is sharded over `data`; the state keeps its sharding and is
  donated.
  """
  model = model_lib.Transformer(model_config)
  tx = optimizer_lib.make_optimizer(optimizer_config)
  _, shardings = abstract_state_and_shardings(
    model_config, optimizer_config, mesh
  )

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch.token_ids)
    losses = model_lib.token_losses(logits, batch.token_ids, batch.loss_mask)
    return losses.sum() / jnp.maximum(batch.loss_mask[:, 1:].sum(), 1.0)

  def step_fn(state: TrainState, batch: data_lib.Batch):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss

  batch_sharding = data_lib.Batch(
    partitioning.batch_sharding(mesh), partitioning.batch_sharding(mesh)
  )
  return jax.jit(
    step_fn,
    in_shardings=(shardings, batch_sharding),
    out_shardings=(shardings, partitioning.replicated(mesh)),
    donate_argnums=0,
  )


def batch_indices(
  step: int, *, num_examples: int, batch_size: int, seed: int
) -> np.ndarray:
  """Example indices of the batch at `step`: epochs of seeded permutations."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  indices = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    order = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    chosen = epochs == epoch
    indices[chosen] = order[offsets[chosen]]
  return indices


def tokenize_corpus(
  examples: Sequence[data_lib.CorpusExample],
  tokenizer: tokenizer_lib.Tokenizer,
  *,
  seq_len: int,
) -> data_lib.Batch:
  """All examples as one padded [n, seq_len] batch (truncating long ones)."""
  sequences = [
    data_lib.tokenize_text(tokenizer, example.text, max_len=seq_len)
    for example in examples
  ]
  return data_lib.pad_batch(sequences, seq_len=seq_len)


def load_or_train_tokenizer(
  examples: Sequence[data_lib.CorpusExample], *, vocab_size: int, path: str
) -> tokenizer_lib.Tokenizer:
  """Reuses the tokenizer at `path` (a resumed run) or trains and saves one."""
  if files.exists(path):
    with files.open(path, "rb") as f:
      return tokenizer_lib.Tokenizer(f.read())
  proto = tokenizer_lib.train_sentencepiece(
    (example.text for example in examples), vocab_size=vocab_size
  )
  files.makedirs(os.path.dirname(path))
  with files.open(path, "wb") as f:
    f.write(proto)
  return tokenizer_lib.Tokenizer(proto)


def train(
  *,
  corpus_path: str,
  output_dir: str,
  model_config: model_lib.ModelConfig,
  optimizer_config: optimizer_lib.OptimizerConfig,
  train_config: TrainConfig,
  stop_after_steps: int | None = None,
  devices: Sequence[Any] | None = None,
) -> TrainResult:
  """Trains the model on a corpus, resuming from the last checkpoint.

  Args:
    corpus_path: JSONL or TFRecord corpus (DESIGN.md section 4).
    output_dir: Receives `tokenizer.model`, `checkpoints/<step>/` and
      `train_log.jsonl`.
    model_config: The transformer's shape. Its `vocab_size` is the size the
      tokenizer is trained to.
    optimizer_config: Optimizer and schedule.
    train_config: Steps, batch, sequence length, seed, mesh.
    stop_after_steps: Stop (with a checkpoint) after this many steps of this
      call, as if interrupted; for tests of resumption.
    devices: Devices for the mesh; all by default.

  Returns:
    Where the last checkpoint is and how training went.
  """
  cfg = train_config
  if cfg.seq_len > model_config.max_len:
    raise ValueError(
      f"seq_len={cfg.seq_len} exceeds the model's max_len="
      f"{model_config.max_len}"
    )
  stats = data_lib.ReadStats()
  examples = list(
    data_lib.read_corpus(
      corpus_path, skip_malformed=cfg.skip_malformed, stats=stats
    )
  )
  if stats.skipped:
    logging.warning(
      "skipped %d malformed corpus lines, first: %s",
      len(stats.skipped),
      stats.skipped[0],
    )
  if not examples:
    raise ValueError(f"no usable examples in {corpus_path}")
  tokenizer = load_or_train_tokenizer(
    examples,
    vocab_size=model_config.vocab_size,
    path=os.path.join(output_dir, "tokenizer.model"),
  )
  # The configured vocab_size stays: SentencePiece may return fewer pieces,
  # and an arbitrary count need not divide over the `model` mesh axis. Rows
  # past the tokenizer's are never looked up.
  if tokenizer.vocab_size > model_config.vocab_size:
    raise ValueError(
      f"tokenizer has {tokenizer.vocab_size} pieces, more than the model's "
      f"vocab_size={model_config.vocab_size}"
    )
  corpus = tokenize_corpus(examples, tokenizer, seq_len=cfg.seq_len)
  mesh = partitioning.make_mesh(
    data=cfg.mesh_data, model=cfg.mesh_model, devices=devices
  )
  writer = checkpoint_lib.CheckpointWriter(
    os.path.join(output_dir, "checkpoints")
  )
  state = _restore_or_init(
    writer, model_config, optimizer_config, mesh, seed=cfg.seed
  )
  step_fn = make_train_step(model_config, optimizer_config, mesh)
  save = lambda s: writer.save(
    s,
    model_config=model_config,
    optimizer_config=optimizer_config,
    tokenizer=tokenizer,
    extra_metadata={
      "train_config": dataclasses.asdict(cfg),
      "corpus_path": files.abspath(corpus_path),
      "num_examples": len(examples),
      "skipped_examples": len(stats.skipped),
    },
  )
  try:
    return _loop(
      state,
      step_fn,
      corpus,
      cfg,
      save=save,
      output_dir=output_dir,
      stop_after_steps=stop_after_steps,
      latest_path=os.path.join(writer.directory, str(int(state.step))),
    )
  finally:
    writer.close()


def _restore_or_init(writer, model_config, optimizer_config, mesh, *, seed):
  if writer.latest_step() is None:
    return init_state(model_config, optimizer_config, mesh, seed=seed)
  restored = checkpoint_lib.load_checkpoint(writer.directory, mesh=mesh)
  logging.info("resuming from %s", restored.path)
  return restored.state


def _loop(
  state,
  step_fn,
  corpus,
  cfg,
  *,
  save,
  output_dir,
  stop_after_steps,
  latest_path,
):
  """Runs steps from `state.step` to the end, logging and checkpointing."""
  first = int(state.step)
  last = cfg.num_steps
  if stop_after_steps is not None:
    last = min(last, first + stop_after_steps)
  path = None
  window_losses, window_tokens, total_tokens = [], 0, 0
  final_loss = float("nan")
  log_path = os.path.join(output_dir, "train_log.jsonl")
  start = time.perf_counter()
  window_start = start
  progress = tqdm(range(first, last), desc="train", unit="step", initial=0)
  for step in progress:
    idx = batch_indices(
      step,
      num_examples=len(corpus.token_ids),
      batch_size=cfg.batch_size,
      seed=cfg.seed,
    )
    batch = data_lib.Batch(corpus.token_ids[idx], corpus.loss_mask[idx])
    state, loss = step_fn(state, batch)
    window_losses.append(loss)
    tokens = int(batch.loss_mask.sum())
    window_tokens += tokens
    total_tokens += tokens
    done = step + 1
    if done % cfg.log_every == 0 or done == last:
      final_loss = float(np.mean(jax.device_get(window_losses)))
      now = time.perf_counter()
      record = {
        "step": done,
        "loss": round(final_loss, 5),
        "tokens_per_second": round(window_tokens / (now - window_start), 1),
      }
      progress.set_postfix(
        loss=record["loss"], tok_s=record["tokens_per_second"]
      )
      with files.open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
      window_losses, window_tokens, window_start = [], 0, now
    if done % cfg.checkpoint_every == 0 or done == last:
      path = save(state)
  seconds = time.perf_counter() - start
  if path is None:  # Nothing left to run: the run had already finished.
    path = latest_path
  return TrainResult(
    output_dir=output_dir,
    checkpoint_path=path,
    final_loss=final_loss,
    steps=last - first,
    seconds=seconds,
    tokens_per_second=total_tokens / seconds if seconds else 0.0,
  )
