"""What the model answers: greedy continuations and target log-probabilities.

A query counts as answered correctly when the model's greedy next tokens
equal the target. With teacher forcing that is one forward pass: greedy
decoding yields the target exactly when, at every target position, the
argmax of the logits is the target token.
"""

import collections
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trak_jax import data as data_lib
from trak_jax import model as model_lib
from trak_jax import models
from trak_jax import tokenizer as tokenizer_lib


class Answers(NamedTuple):
  correct: np.ndarray  # [queries] bool, greedy tokens == target tokens
  target_log_prob: np.ndarray  # [queries] float32, log p(target | prompt)
  predictions: list[str]  # the model's greedy continuation of each prompt


def _batches(items: Sequence[Any], size: int):
  for start in range(0, len(items), size):
    yield items[start : start + size]


def make_scorer(model: nn.Module):
  """Jitted (params, batch) -> ([b] all-argmax-correct, [b] target log p)."""

  @jax.jit
  def score(params, token_ids, loss_mask):
    logits = model.apply({"params": params}, token_ids)
    # [b, seq - 1] predictions of tokens 1..seq-1
    hits = jnp.argmax(logits[:, :-1], axis=-1) == token_ids[:, 1:]
    on_target = loss_mask[:, 1:] > 0
    correct = jnp.all(hits | ~on_target, axis=-1)
    losses = model_lib.token_losses(logits, token_ids, loss_mask)
    return correct, -losses.sum(axis=-1)

  return score


def make_greedy_decoder(model: nn.Module, *, new_tokens: int):
  """Jitted greedy decoding of `new_tokens` tokens after each prompt."""

  @jax.jit
  def decode(params, token_ids, lengths):
    rows = jnp.arange(token_ids.shape[0])

    def step(carry, _):
      ids, length = carry
      logits = model.apply({"params": params}, ids)
      # [b, vocab] logits after each row's last token
      next_ids = jnp.argmax(logits[rows, length - 1], axis=-1).astype(ids.dtype)
      ids = ids.at[rows, length].set(next_ids)
      return (ids, length + 1), next_ids

    _, generated = jax.lax.scan(
      step, (token_ids, lengths), None, length=new_tokens
    )
    return generated.T  # [b, new_tokens]

  return decode


def answer_queries(
  params: Any,
  model_config: models.ModelConfig,
  tokenizer: tokenizer_lib.AnyTokenizer,
  queries: Sequence[data_lib.Query],
  *,
  batch_size: int = 64,
  new_tokens: int = 6,
) -> Answers:
  """Scores each query's target and decodes the model's own answer.

  A prompt longer than `max_len - new_tokens` is cut to fit before decoding
  the shown prediction; `correct` and `target_log_prob` always see it whole.

  Args:
    params: Model parameters.
    model_config: Model shape.
    tokenizer: The checkpoint's tokenizer.
    queries: Queries with `prompt` and `target`.
    batch_size: Queries per forward pass.
    new_tokens: Length of the greedy continuation shown as the prediction.

  Returns:
    Per query: correct or not, log p(target | prompt), predicted text.
  """
  model = models.build_module(model_config)
  max_len = model_config.max_len
  score = make_scorer(model)
  decode = make_greedy_decoder(model, new_tokens=new_tokens)
  correct, log_probs, predictions = [], [], []
  for chunk in _batches(list(queries), batch_size):
    encoded = [
      data_lib.tokenize_query(tokenizer, q.prompt, q.target, max_len=max_len)
      for q in chunk
    ]
    # Padded to a multiple of 16 past the longest query and its answer, not
    # to `max_len` (thousands of positions for an imported model).
    longest = max(len(ids) for ids, _ in encoded) + new_tokens
    seq_len = min(max_len, -(-longest // 16) * 16)
    batch = data_lib.pad_batch(encoded, seq_len=seq_len)
    hit, log_prob = score(params, batch.token_ids, batch.loss_mask)
    correct.append(np.asarray(hit))
    log_probs.append(np.asarray(log_prob))
    prompt_lengths = np.array(
      [int((mask == 0).sum()) for _, mask in encoded], np.int32
    )
    prompts = np.where(
      np.arange(seq_len)[None] < prompt_lengths[:, None], batch.token_ids, 0
    )
    room = seq_len - new_tokens
    generated = decode(params, prompts, np.minimum(prompt_lengths, room))
    predictions.extend(tokenizer.decode(row) for row in np.asarray(generated))
  return Answers(
    correct=np.concatenate(correct),
    target_log_prob=np.concatenate(log_probs),
    predictions=predictions,
  )


def accuracy_by_group(
  correct: np.ndarray, groups: Sequence[str]
) -> dict[str, dict[str, float]]:
  """Share correct, overall (key "all") and per group label.

  Raises:
    ValueError: If a group is itself called "all".
  """
  members = collections.defaultdict(list)
  for flag, group in zip(correct, groups, strict=True):
    if str(group) == "all":
      raise ValueError("group label 'all' is reserved for the overall share")
    members[str(group)].append(bool(flag))
  members["all"] = [bool(flag) for flag in correct]
  return {
    group: {"queries": len(flags), "accuracy": float(np.mean(flags))}
    for group, flags in members.items()
  }
