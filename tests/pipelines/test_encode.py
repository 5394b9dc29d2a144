"""The encode job: nothing lost, resumable, refuses what it must."""

import dataclasses
import json
import os
import shutil

import apache_beam as beam
import jax
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import encode_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import projection as projection_lib
from trak_jax import store as store_lib

CONFIG = encoder_lib.preset(
  "trackstar", projection=projection_lib.ProjectionSpec(dim=256)
)


def options(tiny_run, output_dir, **overrides):
  values = dict(
    corpus=tiny_run["corpus"],
    checkpoint=tiny_run["checkpoint"],
    output_dir=str(output_dir),
    encoder_config=CONFIG,
    num_shards=3,
    batch_size=16,
  )
  values.update(overrides)
  return encode_lib.EncodeOptions(**values)


def run(opts):
  return encode_lib.run_pipeline(TestPipeline(), options=opts)


def corpus_ids(path):
  return [json.loads(line)["id"] for line in open(path)]


def write_messy_corpus(tiny_run, path):
  """The tiny corpus plus every kind of bad line; returns expected reasons."""
  shutil.copy(tiny_run["corpus"], path)
  long_text = " ".join(["word"] * 200)
  with open(path, "ab") as f:
    f.write(b"{not json\n")
    f.write(json.dumps({"id": "no-text"}).encode() + b"\n")
    f.write(json.dumps({"id": "empty", "text": "   "}).encode() + b"\n")
    f.write(b'{"id": "bad-bytes", "text": "caf\xff"}\n')
    f.write(json.dumps({"id": "long", "text": long_text}).encode() + b"\n")
    f.write(
      json.dumps({"id": short_id(path), "text": "again"}).encode() + b"\n"
    )
  return {
    None: "bad JSON",
    "no-text": "missing field 'text'",
    "empty": "field 'text' is empty",
    "bad-bytes": "undecodable bytes",
    "long": "too long",
    short_id(path): "duplicate id",
  }


def short_id(path):
  """The first corpus id whose text is short enough never to be truncated."""
  for line in open(path, "rb"):
    record = json.loads(line)
    if len(record["text"]) < 80:
      return record["id"]
  raise AssertionError("no short passage")


def test_every_input_is_encoded_or_rejected(tiny_run, tmp_path):
  corpus = tmp_path / "messy.jsonl"
  expected_reasons = write_messy_corpus(tiny_run, corpus)
  out = tmp_path / "store"
  result = run(options(tiny_run, out, corpus=str(corpus), truncate=False))
  manifest = json.load(open(out / "manifest.json"))
  counts = manifest["counts"]
  assert counts["read"] == len(open(corpus, "rb").readlines())
  assert counts["encoded"] + counts["rejected"] == counts["read"]
  rejected = [json.loads(line) for line in open(out / "rejected.jsonl")]
  for example_id, reason in expected_reasons.items():
    hits = [r for r in rejected if r.get("id") == example_id]
    assert hits and reason in hits[0]["reason"], (example_id, rejected)
  assert rejected[0]["location"].endswith(f"{corpus}:140")  # bad JSON line
  store = store_lib.EncodingStore(str(out))
  stored = [r.id for r in store.records()]
  assert len(stored) == len(set(stored)) == counts["encoded"]
  # Every corpus passage is stored unless it is longer than the model.
  too_long = {r["id"] for r in rejected if r["reason"].startswith("too long")}
  assert "long" in too_long
  valid = set(corpus_ids(tiny_run["corpus"]))
  assert set(stored) == valid - too_long
  assert short_id(tiny_run["corpus"]) in stored  # The first is kept.
  counters = encode_lib.counters(result)
  assert counters["examples_read"] == counts["read"]
  assert counters["examples_encoded"] == counts["encoded"]
  assert counters["examples_rejected"] == counts["rejected"]
  assert counters["tokens"] == counts["tokens"] > 0


def test_store_vectors_equal_the_encoder(tiny_run, tmp_path):
  out = tmp_path / "store"
  run(options(tiny_run, out))
  store = store_lib.EncodingStore(str(out))
  assert len(store.manifest["shards"]) == 3
  for shard in range(3):  # Each id sits in its hashed shard.
    assert all(
      store_lib.shard_of(r.id, 3) == shard for r in store.shard_records(shard)
    )
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  # The job measured the layout's energies and recorded them.
  config = encoder_lib.with_recorded_layout(
    CONFIG, store.manifest["encoder_config"]
  )
  assert not config.projection.needs_energy
  encoder = encoder_lib.from_checkpoint(loaded, config)
  assert store.fingerprint == encoder.fingerprint
  examples = {e.id: e for e in data_lib.read_corpus(tiny_run["corpus"])}
  records = list(store.records())[:8]
  sequences = [
    data_lib.tokenize_text(loaded.tokenizer, examples[r.id].text, max_len=64)
    for r in records
  ]
  batch = data_lib.pad_batch(sequences, seq_len=64)
  direct = encoder_lib.host_features(encoder, batch)
  stored = np.stack([r.vector for r in records])
  scale = np.abs(direct.features).max()
  np.testing.assert_allclose(stored, direct.features, atol=1e-4 * scale)
  np.testing.assert_allclose(
    [r.loss for r in records], direct.losses, rtol=1e-5
  )


def test_non_finite_gradients_are_rejected_not_written(
  tiny_run, tmp_path, monkeypatch
):
  real = encoder_lib.host_features

  def overflowing(encoder, batch):
    """The real encodings, with long examples' gradients overflowing."""
    out = real(encoder, batch)
    long = out.num_tokens > 20
    features = np.where(long[:, None], np.inf, out.features)
    return out._replace(features=features, finite=out.finite & ~long)

  monkeypatch.setattr(encoder_lib, "host_features", overflowing)
  corpus = tmp_path / "corpus.jsonl"
  with open(corpus, "w") as f:
    f.write(json.dumps({"id": "fine", "text": "A quiet park."}) + "\n")
    long_text = " ".join(["Oslo is a city."] * 8)
    f.write(json.dumps({"id": "bad", "text": long_text}) + "\n")
  out = tmp_path / "store"
  run(options(tiny_run, out, corpus=str(corpus), num_shards=1))
  rejected = [json.loads(line) for line in open(out / "rejected.jsonl")]
  assert rejected == [{"id": "bad", "reason": "non-finite gradient"}]
  records = list(store_lib.EncodingStore(str(out)).records())
  assert [r.id for r in records] == ["fine"]
  assert np.isfinite(records[0].vector).all()


def test_the_encoder_flags_non_finite_rows(tiny_run):
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  params = jax.tree.map(np.array, jax.device_get(loaded.params))
  params["final_norm"]["scale"][:] = np.nan
  params = jax.tree.map(
    lambda new, old: jax.device_put(new, old.sharding), params, loaded.params
  )
  poisoned = loaded._replace(state=loaded.state._replace(params=params))
  equal = dataclasses.replace(CONFIG.projection, allocation="equal")
  encoder = encoder_lib.from_checkpoint(
    poisoned, dataclasses.replace(CONFIG, projection=equal)
  )
  batch = data_lib.pad_batch(
    [data_lib.tokenize_text(loaded.tokenizer, "A park.", max_len=64)] * 8,
    seq_len=64,
  )
  assert not encoder_lib.host_features(encoder, batch).finite.any()


def test_a_stopped_run_leaves_no_completed_and_a_rerun_finishes(
  tiny_run, tmp_path, monkeypatch
):
  out = tmp_path / "store"
  real_write = store_lib.write_shard

  def dies_on_shard_one(directory, **kwargs):
    if kwargs["index"] == 1:
      raise RuntimeError("worker died")
    return real_write(directory, **kwargs)

  monkeypatch.setattr(store_lib, "write_shard", dies_on_shard_one)
  with pytest.raises(Exception, match="worker died"):
    run(options(tiny_run, out))
  assert not (out / store_lib.COMPLETED).exists()
  assert not (out / store_lib.shard_name(1, 3)).exists()
  monkeypatch.setattr(store_lib, "write_shard", real_write)
  finished_before = {
    i: os.path.getmtime(out / store_lib.shard_name(i, 3))
    for i in (0, 2)
    if (out / store_lib.shard_name(i, 3)).exists()
  }
  assert finished_before  # Some shards finished before the failure.
  run(options(tiny_run, out))
  assert (out / store_lib.COMPLETED).exists()
  for i, mtime in finished_before.items():  # Done shards were skipped.
    assert os.path.getmtime(out / store_lib.shard_name(i, 3)) == mtime
  ids = [r.id for r in store_lib.EncodingStore(str(out)).records()]
  assert sorted(ids) == sorted(corpus_ids(tiny_run["corpus"]))


def test_a_shard_without_metadata_is_rewritten(tiny_run, tmp_path):
  out = tmp_path / "store"
  run(options(tiny_run, out))
  os.remove(out / store_lib.shard_name(2, 3).replace(".tfrecord", ".json"))
  os.remove(out / store_lib.COMPLETED)
  run(options(tiny_run, out))
  ids = [r.id for r in store_lib.EncodingStore(str(out)).records()]
  assert sorted(ids) == sorted(corpus_ids(tiny_run["corpus"]))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_shard_is_named(tiny_run, tmp_path, damage):
  out = tmp_path / "store"
  run(options(tiny_run, out))
  shard = out / store_lib.shard_name(1, 3)
  data = bytearray(open(shard, "rb").read())
  if damage == "truncate":
    data = data[: len(data) // 2]
  else:
    data[len(data) // 2] ^= 0xFF
  open(shard, "wb").write(bytes(data))
  store = store_lib.EncodingStore(str(out))
  with pytest.raises(store_lib.StoreError, match=str(shard)):
    list(store.records())
  unverified = store_lib.EncodingStore(str(out), verify=False)
  with pytest.raises(store_lib.StoreError, match=str(shard)):
    list(unverified.records())


def test_another_encoder_is_refused(tiny_run, tmp_path):
  out = tmp_path / "store"
  run(options(tiny_run, out))
  other = encoder_lib.preset(
    "trackstar",
    projection=projection_lib.ProjectionSpec(
      dim=256, seed=9, allocation="equal"
    ),
  )
  expected = encoder_lib.fingerprint_for_checkpoint(
    tiny_run["checkpoint"], other
  )
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'projection'"
  ):
    store_lib.EncodingStore(str(out), expected=expected)
  # Rerunning into the same directory with another encoder is refused too.
  os.remove(out / store_lib.COMPLETED)
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'projection'"
  ):
    run(options(tiny_run, out, encoder_config=other))


def test_parse_routes_bad_lines_with_test_pipeline():
  lines = [
    ("c.jsonl:1", b'{"id": "a", "text": "x"}'),
    ("c.jsonl:2", b"{oops"),
    ("c.jsonl:3", b'{"id": "b", "text": ""}'),
  ]
  with TestPipeline() as p:
    parsed = (
      p
      | beam.Create(lines)
      | beam.ParDo(encode_lib.Parse(num_shards=1, done_shards=())).with_outputs(
        encode_lib.Parse.REJECTED, main="examples"
      )
    )
    assert_that(
      parsed.examples,
      equal_to([(0, (("c.jsonl", 1), data_lib.CorpusExample("a", "x")))]),
      label="examples",
    )
    assert_that(
      parsed[encode_lib.Parse.REJECTED]
      | beam.Map(lambda r: (r.id, r.location)),
      equal_to([(None, "c.jsonl:2"), ("b", "c.jsonl:3")]),
      label="rejected",
    )


def test_encode_corpus_transform_outputs_the_manifest(tiny_run, tmp_path):
  out = tmp_path / "store"
  opts = options(tiny_run, out, num_shards=2)
  with TestPipeline() as p:
    manifest = (
      p | beam.Create([tiny_run["corpus"]]) | encode_lib.EncodeCorpus(opts)
    )
    n = len(corpus_ids(tiny_run["corpus"]))
    assert_that(
      manifest
      | beam.Map(lambda m: (m["counts"]["read"], m["counts"]["encoded"])),
      equal_to([(n, n)]),
    )
  assert (out / store_lib.COMPLETED).exists()


def tokenized_lengths(*lengths):
  return [
    encode_lib.Tokenized(
      f"e{i}", np.arange(1, n + 1, dtype=np.int32), np.ones(n, np.float32)
    )
    for i, n in enumerate(lengths)
  ]


def test_batches_are_padded_to_the_smallest_bucket_that_fits():
  tokenized = tokenized_lengths(5, 40, 17, 64, 16, 3, 33)
  batches = list(
    encode_lib.make_batches(
      tokenized, batch_size=2, max_len=64, length_buckets=(16, 32, 48, 99)
    )
  )
  # Longest first, ties in input order; every example in exactly one row.
  assert [b.rows for b in batches] == [(3, 1), (6, 2), (4, 0), (5,)]
  assert [b.batch.token_ids.shape for b in batches] == [
    (2, 64), (2, 48), (2, 16), (2, 16)
  ]  # fmt: skip
  for planned in batches:
    for row, position in enumerate(planned.rows):
      ids = tokenized[position].token_ids
      np.testing.assert_array_equal(
        planned.batch.token_ids[row, : len(ids)], ids
      )
      assert not planned.batch.token_ids[row, len(ids) :].any()
  assert not batches[-1].batch.loss_mask[1].any()  # The empty row.
  unbucketed = list(
    encode_lib.make_batches(tokenized, batch_size=2, max_len=64)
  )
  assert [b.rows for b in unbucketed] == [(0, 1), (2, 3), (4, 5), (6,)]
  assert {b.batch.token_ids.shape for b in unbucketed} == {(2, 64)}


def test_bucketing_writes_the_same_store_as_padding_to_max_len(
  tiny_run, tmp_path
):
  stores = {}
  for name, buckets in (("bucketed", (8, 16, 32, 48)), ("padded", ())):
    out = tmp_path / name
    run(options(tiny_run, out, num_shards=2, length_buckets=buckets))
    stores[name] = store_lib.EncodingStore(str(out))
  bucketed, padded = stores["bucketed"], stores["padded"]
  lengths = {b.token_ids.shape[1] for b in bucketed_batches(tiny_run)}
  assert len(lengths) > 2  # The corpus does use several buckets.
  assert bucketed.manifest["counts"] == padded.manifest["counts"]
  a, b = list(bucketed.records()), list(padded.records())
  assert [r.id for r in a] == [r.id for r in b]  # Same order in each shard.
  assert [r.num_tokens for r in a] == [r.num_tokens for r in b]
  vectors_a, vectors_b = (np.stack([r.vector for r in x]) for x in (a, b))
  scale = np.abs(vectors_b).max()
  np.testing.assert_allclose(vectors_a, vectors_b, rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(
    [r.loss for r in a], [r.loss for r in b], rtol=1e-5
  )


def bucketed_batches(tiny_run):
  loaded = checkpoint_lib.read_header(tiny_run["checkpoint"])
  tokenized = encode_lib.tokenize_examples(
    loaded.tokenizer,
    data_lib.read_corpus(tiny_run["corpus"]),
    max_len=64,
    truncate=True,
    rejected=[],
  )
  return [
    planned.batch
    for planned in encode_lib.make_batches(
      tokenized, batch_size=16, max_len=64, length_buckets=(8, 16, 32, 48)
    )
  ]
