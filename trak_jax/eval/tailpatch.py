"""Tail-patch: how much one training step on a proponent helps its query.

DESIGN.md section 5: from the final checkpoint, take one optimizer step on a
single proponent, measure the change in the target's log-probability given
the prompt, restore the parameters; average over the top-10 proponents and
then over queries.

Here:

- **The step's loss** is the training loss of a batch holding only the
  proponent: its mean token cross-entropy over the whole passage (summed
  token losses over the number of predicted tokens), exactly as
  `trak_jax.train.make_train_step` normalises a batch. One tail-patch step
  is thus one training step with batch size 1.
- **The step** (`optimizer="checkpoint"`, the default) is the checkpoint's
  own optimizer (`trak_jax.optimizer.make_optimizer`, gradient clipping
  included) with a constant learning rate, applied to the checkpoint's
  optimizer state: Adam's moments or Adafactor's factored second moments,
  and their step counts, are those at the end of training. This is the step
  training would have taken next, had its batch been the proponent. With
  AdamW that step carries the checkpoint's first moment (`b1 * mu`), a drift
  shared by every proponent, so it shifts all deltas of a query by the same
  amount and leaves their differences to the proponent's gradient.
  `optimizer="checkpoint_noclip"` is the same step without the global-norm
  clip (training clips every gradient above `clip_norm` to that norm, a
  normalisation of the training side). `optimizer="sgd"` takes a plain
  gradient step instead (no clipping, no state): `params - step_size *
  grad`.
- **The step size** is the end-of-training learning rate
  (`OptimizerConfig.final_learning_rate`) unless given; `step_size` says
  which was used.
- **The measures** are Δlog p, `log p(target | prompt)` after the step
  minus before, with the query tokenized by `trak_jax.data.tokenize_query`
  (the negated, target-masked summed loss), and Δp, `p(target | prompt)`
  after minus before (the paper's measure). `deltas` returns Δlog p,
  `changes` both; `top_k_means` averages a ranked list's top 1, 3, 5 and
  10 (the paper's Table A.6).

Parameters are never modified: the patched parameters are computed
functionally inside one jitted function and dropped, so "restore" is
automatic. Proponents are patched `proponents_per_call` at a time (vmapped);
each call holds that many copies of the parameters' gradients and updates,
so lower it for large models.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from trak_jax import data as data_lib
from trak_jax import model as model_lib
from trak_jax import models
from trak_jax import optimizer as optimizer_lib
from trak_jax import tokenizer as tokenizer_lib

OPTIMIZERS = ("checkpoint", "checkpoint_noclip", "sgd")
MEASURES = ("dp", "dlogp")
TOP_KS = (1, 3, 5, 10)


class _PromptAndTarget(Protocol):
  prompt: str
  target: str


def _log_prob(model: nn.Module, params: Any, row: data_lib.Batch) -> jax.Array:
  """log p(target | prompt) of one query row ([seq] ids and mask) -> []."""
  losses = model_lib.example_losses(
    model, params, row.token_ids[None], row.loss_mask[None]
  )  # [1]
  return -losses[0]


def _mean_token_loss(
  model: nn.Module, params: Any, row: data_lib.Batch
) -> jax.Array:
  """Training loss of a batch of one passage row: mean token loss -> []."""
  logits = model.apply({"params": params}, row.token_ids[None])
  # [1, seq - 1]
  losses = model_lib.token_losses(
    logits, row.token_ids[None], row.loss_mask[None]
  )
  return losses.sum() / jnp.maximum(row.loss_mask[1:].sum(), 1.0)


def make_patch_delta(
  model: nn.Module, tx: optax.GradientTransformation
) -> Callable[[Any, Any, data_lib.Batch, data_lib.Batch], jax.Array]:
  """A pure `patch_delta(params, opt_state, passage_row, query_row) -> []`.

  The returned function takes one step of `tx` from (params, opt_state) on
  the passage's mean token loss and returns [2]: the change of the query's
  `log p(target | prompt)` and of `p(target | prompt)`. Rows are `Batch`es
  of [seq] arrays. Nothing is updated in place; the patched parameters
  never leave the function.

  Args:
    model: The transformer.
    tx: The optimizer taking the step.

  Returns:
    The (unjitted) function.
  """

  def patch_delta(params, opt_state, passage_row, query_row):
    loss_fn = lambda p: _mean_token_loss(model, p, passage_row)
    grads = jax.grad(loss_fn)(params)
    updates, _ = tx.update(grads, opt_state, params)
    patched = optax.apply_updates(params, updates)
    after = _log_prob(model, patched, query_row)
    # Depends only on unbatched inputs, so vmap computes it once.
    before = _log_prob(model, params, query_row)
    return jnp.stack([after - before, jnp.exp(after) - jnp.exp(before)])

  return patch_delta


def patch_optimizer(
  optimizer_config: optimizer_lib.OptimizerConfig,
  *,
  step_size: float,
  optimizer: str = "checkpoint",
) -> optax.GradientTransformation:
  """The transformation of one tail-patch step.

  Args:
    optimizer_config: The checkpoint's optimizer.
    step_size: The constant learning rate of the step.
    optimizer: "checkpoint" (the training optimizer), "checkpoint_noclip"
      (the same without its global-norm clip) or "sgd".

  Returns:
    The transformation. For "checkpoint" and "checkpoint_noclip" its state
    has the structure of the training state: the constant learning rate is
    passed as a schedule, and the clip's (empty) state is kept.

  Raises:
    ValueError: For an unknown `optimizer`.
  """
  if optimizer == "sgd":
    return optax.sgd(step_size)
  # A schedule, not a float: optax keeps a schedule's step count in the
  # state, so the checkpoint's state fits this transformation's structure.
  constant = optax.constant_schedule(step_size)
  if optimizer == "checkpoint":
    return optimizer_lib.make_optimizer(
      optimizer_config, learning_rate=constant
    )
  if optimizer == "checkpoint_noclip":
    unclipped = dataclasses.replace(optimizer_config, clip_norm=0.0)
    core = optimizer_lib.make_optimizer(unclipped, learning_rate=constant)
    if not optimizer_config.clip_norm:
      return core
    # identity's state is empty, as clip_by_global_norm's.
    return optax.chain(optax.identity(), core)
  raise ValueError(f"unknown optimizer {optimizer!r}; expected {OPTIMIZERS}")


def _check_state_fits(
  tx: optax.GradientTransformation, params: Any, opt_state: Any
) -> None:
  expected = jax.tree.structure(jax.eval_shape(tx.init, params))
  found = jax.tree.structure(opt_state)
  if expected != found:
    raise ValueError(
      "the optimizer state does not fit the checkpoint's optimizer: "
      f"expected {expected}, found {found}"
    )


class TailPatcher:
  """Tail-patch deltas of proponents for queries, from one checkpoint.

  Attributes:
    step_size: The learning rate of every patch step.
    optimizer: One of `OPTIMIZERS`.
    seq_len: Passages are truncated, and passages and queries padded, to it.
    proponents_per_call: Proponents patched per jitted call.
  """

  def __init__(
    self,
    params: Any,
    opt_state: Any,
    model_config: models.ModelConfig,
    optimizer_config: optimizer_lib.OptimizerConfig,
    tokenizer: tokenizer_lib.AnyTokenizer,
    *,
    step_size: float | None = None,
    optimizer: str = "checkpoint",
    seq_len: int | None = None,
    proponents_per_call: int = 10,
  ):
    """Prepares (and lazily compiles) the patch step.

    Args:
      params: The final parameters; never modified.
      opt_state: The final optax state (needed for "checkpoint"; ignored
        for "sgd").
      model_config: The model's shape.
      optimizer_config: The training optimizer and schedule.
      tokenizer: The checkpoint's tokenizer.
      step_size: Learning rate of the step; the end-of-training learning
        rate by default.
      optimizer: "checkpoint" (the training optimizer and its final state),
        "checkpoint_noclip" (the same without gradient clipping) or "sgd".
      seq_len: Sequence length; the model's `max_len` by default. Use the
        training `seq_len` to truncate passages as training did.
      proponents_per_call: Proponents patched together (vmapped).

    Raises:
      ValueError: On an unknown optimizer, a missing or mismatched optimizer
        state, or a `seq_len` beyond `max_len`.
    """
    seq_len = model_config.max_len if seq_len is None else seq_len
    if seq_len > model_config.max_len:
      raise ValueError(
        f"seq_len={seq_len} exceeds max_len={model_config.max_len}"
      )
    if step_size is None:
      if optimizer_config is None:
        raise ValueError(
          "the checkpoint records no optimizer, so no learning rate: give "
          "tail-patch a step size"
        )
      step_size = optimizer_config.final_learning_rate
    self.step_size = float(step_size)
    self.optimizer = optimizer
    self.seq_len = seq_len
    self.proponents_per_call = proponents_per_call
    self._params = params
    self._tokenizer = tokenizer
    tx = patch_optimizer(
      optimizer_config, step_size=self.step_size, optimizer=optimizer
    )
    self._opt_state = self._state_for(tx, params, opt_state)
    patch_delta = make_patch_delta(models.build_module(model_config), tx)
    self._patch_deltas = jax.jit(
      jax.vmap(patch_delta, in_axes=(None, None, 0, None))
    )

  def _state_for(self, tx, params, opt_state):
    if self.optimizer == "sgd":
      return tx.init(params)
    if opt_state is None:
      raise ValueError(
        "the checkpoint has no optimizer state; tail-patch with "
        "optimizer='sgd' instead"
      )
    _check_state_fits(tx, params, opt_state)
    return opt_state

  @classmethod
  def from_checkpoint(cls, checkpoint: Any, **options: Any) -> "TailPatcher":
    """A patcher of a loaded `trak_jax.checkpoint.Checkpoint`.

    Args:
      checkpoint: Has `params`, `opt_state`, `model_config`,
        `optimizer_config` and `tokenizer`.
      **options: Keyword options of `TailPatcher`.

    Returns:
      The patcher.
    """
    return cls(
      checkpoint.params,
      checkpoint.opt_state,
      checkpoint.model_config,
      checkpoint.optimizer_config,
      checkpoint.tokenizer,
      **options,
    )

  def _query_row(self, query: _PromptAndTarget) -> data_lib.Batch:
    encoded = data_lib.tokenize_query(
      self._tokenizer, query.prompt, query.target, max_len=self.seq_len
    )
    batch = data_lib.pad_batch([encoded], seq_len=self.seq_len)
    return data_lib.Batch(batch.token_ids[0], batch.loss_mask[0])

  def _passage_chunks(self, passage_texts: Sequence[str]):
    """Yields (Batch [proponents_per_call, seq], number of real rows)."""
    size = self.proponents_per_call
    for start in range(0, len(passage_texts), size):
      chunk = passage_texts[start : start + size]
      encoded = [
        data_lib.tokenize_text(self._tokenizer, text, max_len=self.seq_len)
        for text in chunk
      ]
      # Padding rows are all-zero (no loss); their deltas are dropped. A
      # fixed row count keeps one compiled program.
      empty = (np.zeros(1, np.int32), np.zeros(1, np.float32))
      encoded += [empty] * (size - len(chunk))
      yield data_lib.pad_batch(encoded, seq_len=self.seq_len), len(chunk)

  def changes(
    self, passage_texts: Sequence[str], query: _PromptAndTarget
  ) -> dict[str, np.ndarray]:
    """Δp and Δlog p of each passage's patch for one query.

    Args:
      passage_texts: [p] proponent texts.
      query: Has `prompt` and `target`.

    Returns:
      "dlogp" and "dp" -> [p] float32 changes of log p(target | prompt)
      and p(target | prompt).

    Raises:
      trak_jax.data.TooLongError: If the query does not fit `seq_len`.
    """
    query_row = self._query_row(query)
    found = [np.zeros((0, 2), np.float32)]
    for passages, count in self._passage_chunks(list(passage_texts)):
      # [proponents_per_call, 2]
      chunk = self._patch_deltas(
        self._params, self._opt_state, passages, query_row
      )
      found.append(np.asarray(chunk)[:count])
    both = np.concatenate(found)
    return {"dlogp": both[:, 0], "dp": both[:, 1]}

  def deltas(
    self, passage_texts: Sequence[str], query: _PromptAndTarget
  ) -> np.ndarray:
    """[p] tail-patch Δlog p of each passage for one query (`changes`)."""
    return self.changes(passage_texts, query)["dlogp"]

  def delta(self, passage_text: str, query: _PromptAndTarget) -> float:
    """Tail-patch delta of one passage for one query."""
    return float(self.deltas([passage_text], query)[0])

  def mean_delta(
    self,
    proponent_texts_per_query: Sequence[Sequence[str]],
    queries: Sequence[_PromptAndTarget],
    *,
    top: int = 10,
  ) -> np.ndarray:
    """Mean delta of each query's top proponents (DESIGN.md section 5).

    Args:
      proponent_texts_per_query: [q] ranked proponent texts, best first.
      queries: [q] queries.
      top: Proponents averaged per query.

    Returns:
      [q] float64 mean deltas (NaN for a query without proponents). Their
      mean over queries is the tail-patch score; `trak_jax.eval.metrics.
      mean_interval` adds a bootstrap interval.
    """
    means = []
    for texts, query in zip(proponent_texts_per_query, queries, strict=True):
      deltas = self.deltas(list(texts)[:top], query)
      means.append(float(np.mean(deltas)) if len(deltas) else float("nan"))
    return np.asarray(means, np.float64)


def top_k_means(
  deltas: Sequence[float], ks: Sequence[int] = TOP_KS
) -> dict[int, float]:
  """Mean delta of the top k of a ranked list, for each k (Table A.6).

  Args:
    deltas: [p] deltas of ranked proponents, best first.
    ks: The k's; a list shorter than k averages what it has.

  Returns:
    k -> mean of `deltas[:k]` (NaN for an empty list).

  Raises:
    ValueError: For a k below 1.
  """
  deltas = np.asarray(deltas, np.float64)
  if any(k < 1 for k in ks):
    raise ValueError(f"top_k_means: every k must be at least 1, got {ks}")
  if not len(deltas):
    return {k: float("nan") for k in ks}
  return {k: float(deltas[:k].mean()) for k in ks}
