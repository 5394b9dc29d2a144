"""Corpus and query files, and their tokenized, padded batches.

Formats (DESIGN.md section 4): the corpus is JSONL `{"id", "text"}` or
TFRecord `tf.train.Example` with the same features; queries are JSONL
`{"id", "prompt", "target"}` with optional `relevant_ids` and `fact_id`.
Malformed input raises `MalformedInputError` naming the file and line (or
record), or, where the caller asks, is skipped and counted.
"""

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from trak_jax import files, tf_import
from trak_jax import tokenizer as tokenizer_lib


class MalformedInputError(ValueError):
  """An input record that cannot be used; says which file and line."""

  def __init__(self, location: str, reason: str, example_id: str | None = None):
    super().__init__(f"{location}: {reason}")
    self.location = location
    self.reason = reason
    self.example_id = example_id  # The record's id, where it has one.


class TooLongError(ValueError):
  """A sequence longer than the model's length, with truncation off."""


@dataclasses.dataclass(frozen=True)
class CorpusExample:
  id: str
  text: str


@dataclasses.dataclass(frozen=True)
class Query:
  id: str
  prompt: str
  target: str
  relevant_ids: tuple[str, ...] = ()
  fact_id: str | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReadStats:
  """What a read saw: records read, and (location, reason) of each skip."""

  read: int = 0
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class Batch(NamedTuple):
  token_ids: np.ndarray  # [batch, seq] int32, right-padded with 0
  loss_mask: np.ndarray  # [batch, seq] float32, weight of predicting token t


def parse_corpus_record(record: Any, *, location: str) -> CorpusExample:
  """Validates one decoded corpus record (a dict).

  Raises:
    MalformedInputError: If `id` or `text` is missing, not a string or empty.
  """
  if not isinstance(record, dict):
    raise MalformedInputError(location, "record is not a JSON object")
  example_id = record.get("id")
  if not isinstance(example_id, str) or not example_id:
    raise MalformedInputError(location, "missing or empty field 'id'")
  text = record.get("text")
  reason = None
  if isinstance(text, bytes):
    reason = "field 'text' has undecodable bytes"
  elif text is None:
    reason = "missing field 'text'"
  elif not isinstance(text, str):
    reason = "field 'text' is not a string"
  elif not text.strip():
    reason = "field 'text' is empty"
  if reason:
    raise MalformedInputError(location, reason, example_id)
  return CorpusExample(id=example_id, text=text)


def _id_if_any(line: bytes) -> str | None:
  """The id of a line with bad bytes elsewhere, to name it in the error."""
  try:
    record = json.loads(line.decode("utf-8", errors="replace"))
  except json.JSONDecodeError:
    return None
  example_id = record.get("id") if isinstance(record, dict) else None
  return example_id if isinstance(example_id, str) else None


def parse_corpus_line(line: bytes | str, *, location: str) -> CorpusExample:
  """Parses one JSONL corpus line.

  Raises:
    MalformedInputError: On undecodable bytes, bad JSON or bad fields.
  """
  if isinstance(line, bytes):
    try:
      line = line.decode("utf-8")
    except UnicodeDecodeError as error:
      raise MalformedInputError(
        location, f"undecodable bytes: {error}", _id_if_any(line)
      ) from None
  try:
    record = json.loads(line)
  except json.JSONDecodeError as error:
    raise MalformedInputError(location, f"bad JSON: {error}") from None
  return parse_corpus_record(record, location=location)


def _jsonl_lines(path: str) -> Iterator[tuple[str, bytes]]:
  with files.open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      if line.strip():
        yield f"{path}:{number}", line


def _tfrecord_records(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
  tf = tf_import.tensorflow()  # Heavy; only TFRecord corpora need it.

  for number, raw in enumerate(
    tf.data.TFRecordDataset(path).as_numpy_iterator()
  ):
    location = f"{path}:record {number}"
    feature = tf.train.Example.FromString(raw).features.feature
    values = {
      key: feature[key].bytes_list.value[0]
      for key in ("id", "text")
      if feature[key].bytes_list.value
    }
    record = _decoded(values)
    yield location, record


def _tfds_records(spec: str) -> Iterator[tuple[str, dict[str, Any]]]:
  """Records of "tfds:NAME[/CONFIG][:SPLIT]" from a prepared local dataset."""
  tf_import.tensorflow()  # Its device probe, before tfds runs an op.
  import tensorflow_datasets as tfds

  name, _, split = spec.removeprefix("tfds:").partition(":")
  dataset = tfds.load(name, split=split or "train", shuffle_files=False)
  for number, example in enumerate(tfds.as_numpy(dataset)):
    yield f"{spec}:record {number}", _decoded(example)


def _seqio_records(spec: str) -> Iterator[tuple[str, dict[str, Any]]]:
  """Records of "seqio:TASK[:SPLIT]" (a registered task with id and text)."""
  import seqio

  name, _, split = spec.removeprefix("seqio:").partition(":")
  task = seqio.get_mixture_or_task(name)
  dataset = task.get_dataset(
    sequence_length=None, split=split or "train", shuffle=False
  )
  for number, example in enumerate(dataset.as_numpy_iterator()):
    yield f"{spec}:record {number}", _decoded(example)


def _decoded(example: dict[str, Any]) -> dict[str, Any]:
  record = {}
  for key in ("id", "text"):
    value = example.get(key)
    if isinstance(value, bytes):
      try:
        value = value.decode("utf-8")
      except UnicodeDecodeError:
        pass  # Left as bytes: `parse_corpus_record` rejects it.
    if value is not None:
      record[key] = value
  return record


def raw_corpus_records(source: str) -> Iterator[tuple[str, bytes | dict]]:
  """(location, raw record) of one corpus source, unparsed.

  Args:
    source: A JSONL file, a `.tfrecord` file, "tfds:NAME[:SPLIT]" or
      "seqio:TASK[:SPLIT]".

  Yields:
    JSONL lines as bytes; other sources' records as dicts.
  """
  if source.startswith("tfds:"):
    return _tfds_records(source)
  if source.startswith("seqio:"):
    return _seqio_records(source)
  if ".tfrecord" in os.path.basename(source):
    return _tfrecord_records(source)
  return _jsonl_lines(source)


def parse_raw(location: str, raw: bytes | dict) -> CorpusExample:
  """Parses a record of `raw_corpus_records`.

  Raises:
    MalformedInputError: If it is not a valid corpus example.
  """
  if isinstance(raw, dict):
    return parse_corpus_record(raw, location=location)
  return parse_corpus_line(raw, location=location)


def expand_sources(spec: str) -> list[str]:
  """Corpus sources of a spec: a file, a glob, comma-separated, tfds:/seqio:.

  Files and globs may be local or remote (`gs://bucket/corpus-*.jsonl`).

  Raises:
    FileNotFoundError: If a file or glob matches nothing.
  """
  sources = []
  for part in (p.strip() for p in spec.split(",") if p.strip()):
    if part.startswith(("tfds:", "seqio:")):
      sources.append(part)
      continue
    matches = files.glob(part)
    if not matches:
      raise FileNotFoundError(f"no corpus file matches {part!r}")
    sources.extend(matches)
  return sources


def read_corpus(
  path: str | os.PathLike,
  *,
  skip_malformed: bool = False,
  stats: ReadStats | None = None,
) -> Iterator[CorpusExample]:
  """Reads a corpus: JSONL, TFRecord, or a tfds:/seqio: name.

  Args:
    path: A `.jsonl` file, a `.tfrecord` file of `tf.train.Example`s, or a
      source accepted by `raw_corpus_records`.
    skip_malformed: Skip malformed records (counted in `stats`) instead of
      raising.
    stats: Filled with counts of what was read and skipped.

  Yields:
    The corpus examples, in file order.

  Raises:
    MalformedInputError: On a malformed record, unless `skip_malformed`.
  """
  stats = ReadStats() if stats is None else stats
  for location, raw in raw_corpus_records(os.fspath(path)):
    try:
      example = parse_raw(location, raw)
    except MalformedInputError as error:
      if not skip_malformed:
        raise
      stats.skipped.append((error.location, error.reason))
      continue
    stats.read += 1
    yield example


def read_queries(path: str | os.PathLike) -> list[Query]:
  """Reads a JSONL query file.

  Raises:
    MalformedInputError: On a line that is not a valid query.
  """
  queries = []
  for location, line in _jsonl_lines(os.fspath(path)):
    try:
      record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise MalformedInputError(location, f"bad JSON: {error}") from None
    if not isinstance(record, dict):
      raise MalformedInputError(location, "record is not a JSON object")
    for key in ("id", "prompt", "target"):
      if not isinstance(record.get(key), str) or not record[key]:
        raise MalformedInputError(location, f"missing or empty field '{key}'")
    relevant = record.get("relevant_ids", [])
    if not isinstance(relevant, list) or not all(
      isinstance(r, str) for r in relevant
    ):
      raise MalformedInputError(
        location, "field 'relevant_ids' is not a list of strings"
      )
    if not isinstance(record.get("fact_id", ""), str):
      raise MalformedInputError(location, "field 'fact_id' is not a string")
    known = {"id", "prompt", "target", "relevant_ids", "fact_id"}
    queries.append(
      Query(
        id=record["id"],
        prompt=record["prompt"],
        target=record["target"],
        relevant_ids=tuple(record.get("relevant_ids") or ()),
        fact_id=record.get("fact_id"),
        extra={k: v for k, v in record.items() if k not in known},
      )
    )
  return queries


def _bos(tokenizer: tokenizer_lib.AnyTokenizer) -> list[int]:
  return [] if tokenizer.bos_id is None else [tokenizer.bos_id]


def _eos(tokenizer: tokenizer_lib.AnyTokenizer) -> list[int]:
  return [] if tokenizer.eos_id is None else [tokenizer.eos_id]


def tokenize_text(
  tokenizer: tokenizer_lib.AnyTokenizer,
  text: str,
  *,
  max_len: int,
  truncate: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and loss mask of a training example: loss on every token.

  Returns:
    ([n] int32 ids `[bos] + text + [eos]`, [n] float32 mask), n <= max_len
    (no bos or eos where the tokenizer has none).

  Raises:
    TooLongError: If the example is longer than `max_len` and not `truncate`.
  """
  ids = [*_bos(tokenizer), *tokenizer.encode(text), *_eos(tokenizer)]
  if len(ids) > max_len:
    if not truncate:
      raise TooLongError(f"{len(ids)} tokens > max_len={max_len}")
    ids = ids[:max_len]
  mask = np.ones(len(ids), np.float32)
  mask[:1] = 0.0  # Nothing predicts the first token.
  return np.asarray(ids, np.int32), mask


def tokenize_query(
  tokenizer: tokenizer_lib.AnyTokenizer,
  prompt: str,
  target: str,
  *,
  max_len: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and loss mask of a query: loss on the target tokens only.

  Returns:
    ([n] int32 ids `[bos] + prompt + target`, [n] float32 mask).

  Raises:
    TooLongError: If prompt and target do not fit in `max_len`.
  """
  prompt_ids, target_ids = tokenizer.encode_query(prompt, target)
  prompt_ids = [*_bos(tokenizer), *prompt_ids]
  ids = prompt_ids + target_ids
  if len(ids) > max_len:
    raise TooLongError(f"query has {len(ids)} tokens > max_len={max_len}")
  mask = np.zeros(len(ids), np.float32)
  mask[len(prompt_ids) :] = 1.0
  return np.asarray(ids, np.int32), mask


def pad_batch(
  sequences: Sequence[tuple[np.ndarray, np.ndarray]],
  *,
  seq_len: int,
  num_rows: int | None = None,
) -> Batch:
  """Right-pads (ids, mask) pairs into a `Batch` of shape [rows, seq_len].

  `num_rows` (default: one per sequence) adds empty rows after the
  sequences, so every call can share one compiled batch shape; empty rows
  have no loss and so a zero gradient.
  """
  rows = len(sequences) if num_rows is None else num_rows
  if rows < len(sequences):
    raise ValueError(f"{len(sequences)} sequences do not fit {rows} rows")
  token_ids = np.zeros((rows, seq_len), np.int32)
  loss_mask = np.zeros((rows, seq_len), np.float32)
  for row, (ids, mask) in enumerate(sequences):
    token_ids[row, : len(ids)] = ids
    loss_mask[row, : len(mask)] = mask
  return Batch(token_ids=token_ids, loss_mask=loss_mask)
