"""Tokenizers a checkpoint carries: SentencePiece or Hugging Face's.

`Tokenizer` is the SentencePiece model `trak-jax-train` trains locally;
`HFTokenizer` is an imported checkpoint's `tokenizer.json` (the `tokenizers`
package). Both give `encode`, `encode_query`, `decode`, `vocab_size` and the
ids of the special tokens every job puts around an example (`bos_id`,
`eos_id`, either None where the tokenizer has none). `to_item` and
`from_item` turn either into the JSON a checkpoint saves.
"""

import base64
import io
from collections.abc import Iterable
from typing import Any

import sentencepiece as spm
import tokenizers

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

  bos_id: int | None = BOS_ID
  eos_id: int | None = EOS_ID

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._processor = spm.SentencePieceProcessor(model_proto=model_proto)

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._processor.encode(text)

  def encode_query(self, prompt: str, target: str) -> tuple[list[int], ...]:
    """(prompt ids, target ids), the target encoded as a word of its own."""
    return self.encode(prompt), self.encode(target)

  def decode(self, ids: Iterable[int]) -> str:
    special = (PAD_ID, BOS_ID, EOS_ID)
    return self._processor.decode(
      [int(i) for i in ids if int(i) not in special]
    )

  def __getstate__(self):
    return {"model_proto": self.model_proto}

  def __setstate__(self, state):
    self.__init__(state["model_proto"])


class HFTokenizer:
  """A Hugging Face `tokenizer.json`, through the `tokenizers` package.

  Args:
    tokenizer_json: The file's content.
    bos_id: Put before every example; None if the model has no BOS.
    eos_id: Put after every training example; None if it has none.
  """

  def __init__(
    self, tokenizer_json: str, *, bos_id: int | None, eos_id: int | None
  ):
    self.tokenizer_json = tokenizer_json
    self.bos_id = bos_id
    self.eos_id = eos_id
    self._tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def token_to_id(self, token: str) -> int | None:
    return self._tokenizer.token_to_id(token)

  def encode_query(self, prompt: str, target: str) -> tuple[list[int], ...]:
    """(prompt ids, target ids) of `prompt + target` encoded as one text.

    Byte-level BPE merges a word with the space before it, so the target is
    not encoded alone: tokens that end after the prompt's last character
    are the target's.
    """
    encoding = self._tokenizer.encode(prompt + target, add_special_tokens=False)
    split = next(
      (i for i, (_, end) in enumerate(encoding.offsets) if end > len(prompt)),
      len(encoding.ids),
    )
    return encoding.ids[:split], encoding.ids[split:]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tokenizer.decode(
      [int(i) for i in ids], skip_special_tokens=True
    )

  def __getstate__(self):
    return {
      "tokenizer_json": self.tokenizer_json,
      "bos_id": self.bos_id,
      "eos_id": self.eos_id,
    }

  def __setstate__(self, state):
    self.__init__(
      state["tokenizer_json"], bos_id=state["bos_id"], eos_id=state["eos_id"]
    )


AnyTokenizer = Tokenizer | HFTokenizer


def to_item(tokenizer: AnyTokenizer) -> dict[str, Any]:
  """The JSON a checkpoint keeps of `tokenizer`."""
  if isinstance(tokenizer, HFTokenizer):
    return {"huggingface": tokenizer.__getstate__()}
  encoded = base64.b64encode(tokenizer.model_proto).decode("ascii")
  return {"sentencepiece_model": encoded}


def from_item(item: dict[str, Any]) -> AnyTokenizer:
  """The tokenizer of a checkpoint's JSON item (`to_item`)."""
  if "huggingface" in item:
    state = item["huggingface"]
    return HFTokenizer(
      state["tokenizer_json"], bos_id=state["bos_id"], eos_id=state["eos_id"]
    )
  return Tokenizer(base64.b64decode(item["sentencepiece_model"]))
