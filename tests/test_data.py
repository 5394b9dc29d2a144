"""Corpus and query files: errors that say where, skips, tokenization."""

import json
import uuid

import numpy as np
import pytest

from tests import helpers
from trak_jax import data as data_lib
from trak_jax import files
from trak_jax import tokenizer as tokenizer_lib

GOOD = (
  data_lib.CorpusExample("p0", "the capital of Norway is Oslo"),
  data_lib.CorpusExample("p1", "Paris is a large old city"),
  data_lib.CorpusExample("p2", "a small lake north of the river"),
)

# (name, raw JSONL line, a phrase the reason must contain)
MALFORMED = (
  ("bad_json", b'{"id": "x", "text": ', "bad JSON"),
  ("missing_text", b'{"id": "x"}', "missing field 'text'"),
  ("empty_text", b'{"id": "x", "text": ""}', "'text' is empty"),
  ("blank_text", b'{"id": "x", "text": " \\t\\n "}', "'text' is empty"),
  ("text_not_string", b'{"id": "x", "text": 7}', "'text' is not a string"),
  ("not_an_object", b'["x", "some text"]', "not a JSON object"),
  ("undecodable", b'{"id": "x", "text": "caf\xe9 \xff"}', "undecodable"),
  ("missing_id", b'{"text": "the city"}', "field 'id'"),
  ("empty_id", b'{"id": "", "text": "the city"}', "field 'id'"),
)


def _line(example: data_lib.CorpusExample) -> bytes:
  return json.dumps({"id": example.id, "text": example.text}).encode()


def _write(path, lines: list[bytes]) -> str:
  with open(path, "wb") as f:
    f.write(b"\n".join(lines) + b"\n")
  return str(path)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> tokenizer_lib.Tokenizer:
  path = tmp_path_factory.mktemp("tok") / "corpus.jsonl"
  helpers.write_corpus(str(path), num_examples=200)
  texts = [e.text for e in data_lib.read_corpus(path)]
  proto = tokenizer_lib.train_sentencepiece(texts, vocab_size=64)
  return tokenizer_lib.Tokenizer(proto)


@pytest.mark.parametrize(
  "line, phrase", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_line_error_names_file_and_line(tmp_path, line, phrase):
  # A blank line still counts: the bad record is on line 4 of the file.
  path = _write(
    tmp_path / "c.jsonl", [_line(GOOD[0]), b"", _line(GOOD[1]), line]
  )
  records = data_lib.read_corpus(path)
  assert [next(records), next(records)] == list(GOOD[:2])  # Read lazily.
  with pytest.raises(data_lib.MalformedInputError) as raised:
    next(records)
  assert raised.value.location == f"{path}:4"
  assert str(raised.value).startswith(f"{path}:4: ")
  assert phrase in raised.value.reason


def test_skip_malformed_counts_skips_and_keeps_good_lines_in_order(tmp_path):
  lines, expected_skips = [], []
  for number, (_, bad, phrase) in enumerate(MALFORMED):
    lines.append(_line(GOOD[number % len(GOOD)]))
    lines.append(bad)
    expected_skips.append((f"{tmp_path / 'c.jsonl'}:{2 * number + 2}", phrase))
  path = _write(tmp_path / "c.jsonl", lines)
  stats = data_lib.ReadStats()
  examples = list(data_lib.read_corpus(path, skip_malformed=True, stats=stats))
  assert examples == [GOOD[n % len(GOOD)] for n in range(len(MALFORMED))]
  assert stats.read == len(MALFORMED)
  assert len(stats.skipped) == len(expected_skips)
  for (location, reason), (want_location, phrase) in zip(
    stats.skipped, expected_skips, strict=True
  ):
    assert location == want_location
    assert phrase in reason


def _write_tfrecord(path, records: list[dict[str, bytes]]) -> str:
  import tensorflow as tf

  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      feature = {
        key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        for key, value in record.items()
      }
      example = tf.train.Example(features=tf.train.Features(feature=feature))
      writer.write(example.SerializeToString())
  return str(path)


def _tf_record(example: data_lib.CorpusExample) -> dict[str, bytes]:
  return {"id": example.id.encode(), "text": example.text.encode()}


@pytest.mark.parametrize(
  "name", ["corpus.tfrecord", "corpus.tfrecord-00000-of-00001"]
)
def test_tfrecord_corpus_reads_back_the_examples(tmp_path, name):
  unicode_example = data_lib.CorpusExample("p3", "Zürich is über the lake")
  written = [*GOOD, unicode_example]
  path = _write_tfrecord(tmp_path / name, [_tf_record(e) for e in written])
  stats = data_lib.ReadStats()
  assert list(data_lib.read_corpus(path, stats=stats)) == written
  assert stats.read == len(written) and not stats.skipped


def test_tfrecord_malformed_record_is_reported_with_its_number(tmp_path):
  records = [
    _tf_record(GOOD[0]),
    _tf_record(GOOD[1]),
    {"id": b"no-text"},
    {"id": b"bad-bytes", "text": b"caf\xff"},
    {"text": b"no id here"},
    _tf_record(GOOD[2]),
  ]
  path = _write_tfrecord(tmp_path / "c.tfrecord", records)
  with pytest.raises(data_lib.MalformedInputError) as raised:
    list(data_lib.read_corpus(path))
  # Records are numbered from 0: the third record is "record 2".
  assert raised.value.location == f"{path}:record 2"
  assert "missing field 'text'" in str(raised.value)
  stats = data_lib.ReadStats()
  kept = list(data_lib.read_corpus(path, skip_malformed=True, stats=stats))
  assert kept == [GOOD[0], GOOD[1], GOOD[2]]
  assert [location for location, _ in stats.skipped] == [
    f"{path}:record {n}" for n in (2, 3, 4)
  ]
  reasons = [reason for _, reason in stats.skipped]
  assert "missing field 'text'" in reasons[0]
  assert "undecodable" in reasons[1]
  assert "field 'id'" in reasons[2]


def test_remote_corpora_queries_and_globs_read_like_local_ones():
  # ram://, TensorFlow's in-memory filesystem, stands for gs:// here.
  root = f"ram://test-data-{uuid.uuid4().hex}"
  files.makedirs(root)
  bad = MALFORMED[-1][1]  # Undecodable bytes, on line 3.
  files.write_bytes(
    f"{root}/a.jsonl", b"\n".join([_line(GOOD[0]), _line(GOOD[1]), bad])
  )
  _write_tfrecord(f"{root}/b.tfrecord", [_tf_record(GOOD[2])])
  files.write_bytes(
    f"{root}/q.jsonl",
    json.dumps({"id": "q0", "prompt": "Oslo is in", "target": "N"}).encode(),
  )
  sources = data_lib.expand_sources(f"{root}/*.jsonl, {root}/b.tfrecord")
  assert sources == [f"{root}/a.jsonl", f"{root}/q.jsonl", f"{root}/b.tfrecord"]
  stats = data_lib.ReadStats()
  examples = list(
    data_lib.read_corpus(sources[0], skip_malformed=True, stats=stats)
  )
  assert examples == list(GOOD[:2])
  assert stats.skipped[0][0] == f"{root}/a.jsonl:3"
  assert list(data_lib.read_corpus(sources[2])) == [GOOD[2]]
  assert data_lib.read_queries(f"{root}/q.jsonl") == [
    data_lib.Query(id="q0", prompt="Oslo is in", target="N")
  ]
  with pytest.raises(FileNotFoundError, match="no corpus file matches"):
    data_lib.expand_sources(f"{root}/missing-*.jsonl")


def test_read_queries_parses_optional_and_extra_fields(tmp_path):
  records = [
    {
      "id": "q0",
      "prompt": "The capital of Norway is",
      "target": "Oslo",
      "relevant_ids": ["p0", "p7"],
      "fact_id": "P36:Norway",
      "relation": "P36",
      "subject": "Norway",
    },
    {"id": "q1", "prompt": "Paris is in", "target": "France"},
  ]
  path = _write(tmp_path / "q.jsonl", [json.dumps(r).encode() for r in records])
  assert data_lib.read_queries(path) == [
    data_lib.Query(
      id="q0",
      prompt="The capital of Norway is",
      target="Oslo",
      relevant_ids=("p0", "p7"),
      fact_id="P36:Norway",
      extra={"relation": "P36", "subject": "Norway"},
    ),
    data_lib.Query(id="q1", prompt="Paris is in", target="France"),
  ]


@pytest.mark.parametrize(
  "bad, phrase",
  [
    ({"id": "q1", "prompt": "Paris is in"}, "'target'"),
    ({"id": "q1", "prompt": "Paris is in", "target": ""}, "'target'"),
    ({"prompt": "Paris is in", "target": "France"}, "'id'"),
    ({"id": "q1", "target": "France"}, "'prompt'"),
  ],
)
def test_read_queries_rejects_a_bad_query_naming_file_and_line(
  tmp_path, bad, phrase
):
  good = {"id": "q0", "prompt": "Oslo is in", "target": "Norway"}
  path = _write(
    tmp_path / "q.jsonl", [json.dumps(good).encode(), json.dumps(bad).encode()]
  )
  with pytest.raises(data_lib.MalformedInputError) as raised:
    data_lib.read_queries(path)
  assert raised.value.location == f"{path}:2"
  assert str(raised.value).startswith(f"{path}:2: ")
  assert phrase in raised.value.reason


def test_read_queries_rejects_bad_json_naming_file_and_line(tmp_path):
  path = _write(tmp_path / "q.jsonl", [b'{"id": "q0", "prompt": '])
  with pytest.raises(data_lib.MalformedInputError, match="bad JSON") as raised:
    data_lib.read_queries(path)
  assert raised.value.location == f"{path}:1"


def test_tokenize_text_adds_bos_eos_and_masks_only_the_first(tokenizer):
  text = "the capital of Norway is Oslo"
  body = tokenizer.encode(text)
  assert body and all(i > tokenizer_lib.EOS_ID for i in body)
  ids, mask = data_lib.tokenize_text(tokenizer, text, max_len=64)
  assert ids.dtype == np.int32 and mask.dtype == np.float32
  assert ids.tolist() == [tokenizer_lib.BOS_ID, *body, tokenizer_lib.EOS_ID]
  assert mask.tolist() == [0.0] + [1.0] * (len(ids) - 1)
  assert tokenizer.decode(ids) == text


def test_tokenize_text_truncates_or_raises(tokenizer):
  text = "the capital of Norway is Oslo and Paris is a large old city"
  full, _ = data_lib.tokenize_text(tokenizer, text, max_len=64)
  fitting, _ = data_lib.tokenize_text(
    tokenizer, text, max_len=len(full), truncate=False
  )
  np.testing.assert_array_equal(fitting, full)
  max_len = len(full) - 3
  ids, mask = data_lib.tokenize_text(tokenizer, text, max_len=max_len)
  np.testing.assert_array_equal(ids, full[:max_len])
  assert ids[-1] != tokenizer_lib.EOS_ID
  assert mask.tolist() == [0.0] + [1.0] * (max_len - 1)
  with pytest.raises(data_lib.TooLongError, match=f"max_len={max_len}"):
    data_lib.tokenize_text(tokenizer, text, max_len=max_len, truncate=False)


@pytest.mark.parametrize(
  "prompt, target",
  [
    ("the capital of Norway is", "Oslo"),
    ("the city north of the lake was", "Paris or Oslo"),
  ],
)
def test_tokenize_query_masks_exactly_the_target(tokenizer, prompt, target):
  ids, mask = data_lib.tokenize_query(tokenizer, prompt, target, max_len=32)
  prompt_ids = tokenizer.encode(prompt)
  target_ids = tokenizer.encode(target)
  assert ids.tolist() == [tokenizer_lib.BOS_ID, *prompt_ids, *target_ids]
  assert mask.tolist() == [0.0] * (1 + len(prompt_ids)) + [1.0] * len(
    target_ids
  )
  assert tokenizer.decode(ids[mask == 1]) == target
  assert tokenizer.decode(ids[mask == 0]) == prompt
  with pytest.raises(data_lib.TooLongError):
    data_lib.tokenize_query(tokenizer, prompt, target, max_len=len(ids) - 1)


def test_pad_batch_right_pads_ids_and_masks():
  sequences = [
    (np.array([2, 7, 9], np.int32), np.array([0, 1, 1], np.float32)),
    (
      np.array([2, 5, 6, 8, 3], np.int32),
      np.array([0, 0, 1, 1, 1], np.float32),
    ),
    (np.array([2], np.int32), np.array([0], np.float32)),
  ]
  batch = data_lib.pad_batch(sequences, seq_len=6)
  assert batch.token_ids.shape == batch.loss_mask.shape == (3, 6)
  assert batch.token_ids.dtype == np.int32
  assert batch.loss_mask.dtype == np.float32
  np.testing.assert_array_equal(
    batch.token_ids,
    [[2, 7, 9, 0, 0, 0], [2, 5, 6, 8, 3, 0], [2, 0, 0, 0, 0, 0]],
  )
  np.testing.assert_array_equal(
    batch.loss_mask,
    [[0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]],
  )
  empty = data_lib.pad_batch([], seq_len=4)
  assert empty.token_ids.shape == empty.loss_mask.shape == (0, 4)
