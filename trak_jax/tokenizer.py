"""SentencePiece tokenizer, trained locally and saved with the checkpoint."""

import io
from collections.abc import Iterable

import sentencepiece as spm

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


def train_sentencepiece(
  texts: Iterable[str],
  *,
  vocab_size: int,
  model_type: str = "unigram",
  character_coverage: float = 1.0,
) -> bytes:
  """Trains a SentencePiece model on `texts`.

  Training is single-threaded so the model is the same run to run.

  Args:
    texts: Training sentences.
    vocab_size: Size of the vocabulary, including pad, unk, bos and eos.
    model_type: "unigram" or "bpe".
    character_coverage: Share of characters covered by the vocabulary.

  Returns:
    The serialized model proto.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    vocab_size=vocab_size,
    model_type=model_type,
    character_coverage=character_coverage,
    pad_id=PAD_ID,
    unk_id=UNK_ID,
    bos_id=BOS_ID,
    eos_id=EOS_ID,
    num_threads=1,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return model.getvalue()


class Tokenizer:
  """Encodes text to ids with a SentencePiece model."""

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._processor = spm.SentencePieceProcessor(model_proto=model_proto)

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._processor.encode(text)

  def decode(self, ids: Iterable[int]) -> str:
    special = (PAD_ID, BOS_ID, EOS_ID)
    return self._processor.decode(
      [int(i) for i in ids if int(i) not in special]
    )

  def __getstate__(self):
    return {"model_proto": self.model_proto}

  def __setstate__(self, state):
    self.__init__(state["model_proto"])
