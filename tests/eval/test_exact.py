"""The exact reference against brute-force per-example gradients."""

import jax
import numpy as np
import pytest

from tests import helpers
from trak_jax import correction as correction_lib
from trak_jax import gradients
from trak_jax import model as model_lib
from trak_jax import tokenizer as tokenizer_lib
from trak_jax.eval import exact as exact_lib


class _Loaded:
  """A loaded checkpoint's parts that the encoder reads."""

  def __init__(self, state, tokenizer):
    self.params, self.opt_state = state.params, state.opt_state
    self.model_config, self.digest = helpers.TINY_MODEL, "digest"
    self.max_len = helpers.TINY_MODEL.max_len
    self.tokenizer = tokenizer


class _Tokenizer:
  """Characters as token ids."""

  bos_id = tokenizer_lib.BOS_ID
  eos_id = tokenizer_lib.EOS_ID

  def encode(self, text):
    return [4 + ord(c) % 50 for c in text]

  def encode_query(self, prompt, target):
    return self.encode(prompt), self.encode(target)


def corrected_unit_grads(state, batch):
  grads = gradients.per_example_grads(
    model_lib.apply_fn(helpers.TINY_MODEL),
    state.params,
    batch.token_ids,
    batch.loss_mask,
  )
  fix = correction_lib.from_checkpoint(
    correction_lib.CorrectionSpec(kind="adafactor"),
    state.opt_state,
    state.params,
  )
  rows = []
  for i in range(batch.token_ids.shape[0]):
    flat = gradients.flat_params(jax.tree.map(lambda g, i=i: g[i], grads))
    parts = [
      np.asarray(correction_lib.apply_to_gradient(fix[p], g)).reshape(-1)
      for p, g in sorted(flat.items())
    ]
    row = np.concatenate(parts).astype(np.float64)
    rows.append(row / np.linalg.norm(row))
  return np.stack(rows)


@pytest.fixture(scope="module")
def setup():
  state = helpers.trained_state("adafactor")
  loaded = _Loaded(state, _Tokenizer())
  corpus = helpers.random_batch(seed=3, batch_size=8)
  queries = [
    exact_lib.data_lib.Query(
      id=f"q{i}", prompt="abc" * (i + 1), target=" xy", relevant_ids=()
    )
    for i in range(3)
  ]
  return state, loaded, corpus, queries


def test_exact_scores_equal_cosines_of_brute_force_gradients(setup):
  state, loaded, corpus, queries = setup
  ids = [f"p{i}" for i in range(8)]
  out = exact_lib.exact_scores(
    loaded,
    correction="adafactor",
    corpus_batches=[
      (
        ids[:5],
        corpus._replace(
          token_ids=corpus.token_ids[:8], loss_mask=corpus.loss_mask[:8]
        ),
      )
    ],
    queries=queries,
    batch_size=8,
  )
  query_batch = exact_lib.data_lib.pad_batch(
    [
      exact_lib.data_lib.tokenize_query(
        loaded.tokenizer, q.prompt, q.target, max_len=32
      )
      for q in queries
    ],
    seq_len=32,
  )
  expected = (
    corrected_unit_grads(state, query_batch)
    @ corrected_unit_grads(state, corpus)[:5].T
  )
  assert out.ids == ids[:5]
  np.testing.assert_allclose(out.scores, expected, atol=2e-4)
  top = exact_lib.top_k(out.scores, out.ids, k=3)
  for row, (ranked, _) in enumerate(top):
    assert ranked == [ids[j] for j in np.argsort(-expected[row])[:3]]


def test_query_groups_give_the_same_scores_as_one(setup):
  _, loaded, corpus, queries = setup
  ids = [f"p{i}" for i in range(8)]
  whole, grouped = (
    exact_lib.exact_scores(
      loaded,
      correction="adafactor",
      corpus_batches=[(ids, corpus)],
      queries=queries,
      batch_size=8,
      budget_bytes=budget,
    )
    for budget in (2**30, 1)
  )
  np.testing.assert_allclose(grouped.scores, whole.scores, rtol=1e-5, atol=1e-7)


def test_a_model_over_the_limit_is_refused(setup):
  _, loaded, corpus, queries = setup
  with pytest.raises(exact_lib.TooLargeError, match="exact_max_params"):
    exact_lib.exact_scores(
      loaded,
      correction="adafactor",
      corpus_batches=[(["p0"], corpus)],
      queries=queries,
      batch_size=8,
      max_params=10,
    )


def test_overlap_and_spearman_on_hand_made_rankings():
  assert exact_lib.overlap_at_k(list("abcd"), list("bdxy"), k=4) == 0.5
  scores = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
  reference = np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
  np.testing.assert_allclose(exact_lib.spearman(scores, reference), [1, -1])
