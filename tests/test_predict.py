"""Answers: correct iff greedy decoding gives the target; log-probs; groups."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from trak_jax import data as data_lib
from trak_jax import model as model_lib
from trak_jax import predict
from trak_jax import tokenizer as tokenizer_lib

CONFIG = helpers.TINY_MODEL
MODEL = model_lib.Transformer(CONFIG)
_apply = jax.jit(MODEL.apply)


def _logits(params, ids) -> np.ndarray:
  """A full forward pass of one sequence: [n] -> [n, vocab] float64."""
  padded = np.zeros((1, CONFIG.max_len), np.int32)
  padded[0, : len(ids)] = ids
  # Later (padding) tokens cannot change earlier logits; test_model checks.
  logits = _apply({"params": params}, padded)[0, : len(ids)]
  return np.asarray(logits, np.float64)


class WordTokenizer:
  """Word "w<i>" <-> id i, so any id sequence is exactly some text."""

  bos_id = tokenizer_lib.BOS_ID
  eos_id = tokenizer_lib.EOS_ID

  def encode(self, text: str) -> list[int]:
    return [int(word[1:]) for word in text.split()]

  def encode_query(self, prompt: str, target: str):
    return self.encode(prompt), self.encode(target)

  def decode(self, ids) -> str:
    kept = [int(i) for i in ids if int(i) > tokenizer_lib.EOS_ID]
    return " ".join(f"w{i}" for i in kept)


def _text(ids) -> str:
  return " ".join(f"w{int(i)}" for i in ids)


@pytest.fixture(scope="module")
def params():
  """Random parameters with a sharp output distribution (no argmax ties)."""
  ids = jnp.zeros((1, CONFIG.max_len), jnp.int32)
  params = nn.unbox(jax.jit(MODEL.init)(jax.random.key(7), ids)["params"])
  params["embed"]["embedding"] = params["embed"]["embedding"] * 25.0
  return params


def _greedy_reference(params, prompt_ids, num_tokens: int) -> list[int]:
  """Slow greedy decoding: a full forward pass per new token."""
  ids = list(prompt_ids)
  for _ in range(num_tokens):
    logits = _logits(params, ids)[-1]
    second, first = np.sort(logits)[-2:]
    # Batched decoding sums in another order; with a clear winner both must
    # pick it, so the comparison below does not hinge on float noise.
    assert first - second > 1e-3, "a near-tie: pick another seed"
    ids.append(int(np.argmax(logits)))
  return ids[len(prompt_ids) :]


def test_correct_iff_greedy_decoding_gives_the_target(params):
  rng = np.random.default_rng(0)
  queries, expected, greedy_outputs = [], [], []
  for number in range(10):
    prompt = rng.integers(4, CONFIG.vocab_size, rng.integers(2, 8))
    greedy = _greedy_reference(params, [tokenizer_lib.BOS_ID, *prompt], 6)
    greedy_outputs.append(greedy)
    length = 1 + number % 3
    target = list(greedy[:length])
    if number % 2:  # Change one target token, the first or a later one.
      where = (number // 2) % length
      target[where] = 4 + (target[where] - 4 + 1) % (CONFIG.vocab_size - 4)
    queries.append(
      data_lib.Query(
        id=f"q{number}", prompt=_text(prompt), target=_text(target)
      )
    )
    expected.append(greedy[:length] == target)
  answers = predict.answer_queries(
    params, CONFIG, WordTokenizer(), queries, batch_size=4, new_tokens=6
  )
  assert answers.correct.dtype == bool
  assert answers.correct.tolist() == expected
  assert 0 < sum(expected) < len(expected)
  assert answers.predictions == [
    WordTokenizer().decode(g) for g in greedy_outputs
  ]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> tokenizer_lib.Tokenizer:
  path = tmp_path_factory.mktemp("tok") / "corpus.jsonl"
  helpers.write_corpus(str(path), num_examples=200)
  texts = [e.text for e in data_lib.read_corpus(path)]
  return tokenizer_lib.Tokenizer(
    tokenizer_lib.train_sentencepiece(texts, vocab_size=CONFIG.vocab_size)
  )


def test_target_log_prob_is_minus_the_summed_target_loss(params, tokenizer):
  assert tokenizer.vocab_size <= CONFIG.vocab_size
  queries = [
    data_lib.Query("q0", "the capital of Norway is", "Oslo"),
    data_lib.Query("q1", "Paris is a city in", "France"),
    data_lib.Query("q2", "the river", "was born in a small old city"),
  ]
  answers = predict.answer_queries(
    params, CONFIG, tokenizer, queries, batch_size=2
  )
  for query, log_prob in zip(queries, answers.target_log_prob, strict=True):
    ids, mask = data_lib.tokenize_query(
      tokenizer, query.prompt, query.target, max_len=CONFIG.max_len
    )
    logits = _logits(params, ids)
    total = 0.0
    for t in np.flatnonzero(mask):
      row = logits[t - 1]
      log_softmax = row - row.max() - np.log(np.exp(row - row.max()).sum())
      total += log_softmax[ids[t]]
    assert log_prob == pytest.approx(total, rel=1e-5)
    assert total < -1.0  # The target is not certain: the sum is not trivial.


def test_accuracy_by_group_by_hand():
  correct = np.array([True, False, True, True, False])
  groups = ["P36", "P36", "P19", "P108", "P19"]
  assert predict.accuracy_by_group(correct, groups) == {
    "all": {"queries": 5, "accuracy": 0.6},
    "P36": {"queries": 2, "accuracy": 0.5},
    "P19": {"queries": 2, "accuracy": 0.5},
    "P108": {"queries": 1, "accuracy": 1.0},
  }
  with pytest.raises(ValueError):
    predict.accuracy_by_group(correct, groups[:4])
