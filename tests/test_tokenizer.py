"""SentencePiece training is reproducible; special ids; pickling."""

import pickle
import random

import pytest
import sentencepiece as spm

from tests import helpers
from trak_jax import tokenizer as tokenizer_lib


def _texts(seed: int, count: int = 200) -> list[str]:
  rng = random.Random(seed)
  return [
    " ".join(rng.choice(helpers.WORDS) for _ in range(rng.randint(4, 16)))
    for _ in range(count)
  ]


@pytest.fixture(scope="module")
def proto() -> bytes:
  return tokenizer_lib.train_sentencepiece(_texts(0), vocab_size=64)


def test_training_twice_gives_identical_protos(proto):
  again = tokenizer_lib.train_sentencepiece(_texts(0), vocab_size=64)
  assert again == proto
  other = tokenizer_lib.train_sentencepiece(_texts(1)[:50], vocab_size=48)
  assert other != proto  # The comparison can tell models apart.


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_special_ids_are_pad_unk_bos_eos(model_type):
  model = tokenizer_lib.train_sentencepiece(
    _texts(0), vocab_size=64, model_type=model_type
  )
  processor = spm.SentencePieceProcessor(model_proto=model)
  assert (tokenizer_lib.PAD_ID, tokenizer_lib.UNK_ID) == (0, 1)
  assert (tokenizer_lib.BOS_ID, tokenizer_lib.EOS_ID) == (2, 3)
  assert processor.pad_id() == tokenizer_lib.PAD_ID
  assert processor.unk_id() == tokenizer_lib.UNK_ID
  assert processor.bos_id() == tokenizer_lib.BOS_ID
  assert processor.eos_id() == tokenizer_lib.EOS_ID
  pieces = [processor.id_to_piece(i) for i in range(4)]
  assert pieces == ["<pad>", "<unk>", "<s>", "</s>"]
  tokenizer = tokenizer_lib.Tokenizer(model)
  assert tokenizer.vocab_size == processor.get_piece_size() <= 64
  # Ordinary text never encodes to a special id.
  for text in _texts(2, count=20):
    assert min(tokenizer.encode(text)) > tokenizer_lib.EOS_ID


def test_unknown_characters_encode_to_unk(proto):
  ids = tokenizer_lib.Tokenizer(proto).encode("Oslo \u03a9")
  assert tokenizer_lib.UNK_ID in ids


def test_encode_decode_round_trip(proto):
  tokenizer = tokenizer_lib.Tokenizer(proto)
  # Unseen word orders and unseen words made of seen characters.
  texts = [*_texts(3, count=20), "Oslo river was born in France", "lakes"]
  for text in texts:
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text
    # Padding, bos and eos are dropped when decoding.
    specials = [tokenizer_lib.BOS_ID, *ids, tokenizer_lib.EOS_ID, 0, 0]
    assert tokenizer.decode(specials) == text


def test_pickled_tokenizer_works_after_unpickling(proto):
  tokenizer = tokenizer_lib.Tokenizer(proto)
  restored = pickle.loads(pickle.dumps(tokenizer))
  assert restored.model_proto == proto
  assert restored.vocab_size == tokenizer.vocab_size
  for text in _texts(4, count=10):
    ids = restored.encode(text)
    assert ids == tokenizer.encode(text)
    assert restored.decode(ids) == text
