"""Beam job: encode a corpus into an encoding store (DESIGN.md section 2).

    sources -> read (file:line locations) -> parse       -> rejected
            -> key by shard (stable hash of id), skip done shards
            -> GroupByKey -> EncodeShard (JAX encoder, loaded in setup())
            -> shard files + metadata -> finalize: manifest, rejected.jsonl,
               COMPLETED (last)

A shard is encoded and written by one DoFn call, atomically, so a retried
worker or a rerun rewrites whole shards and never duplicates an id. The model
is loaded once per DoFn instance in `setup()`.
"""

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import store as store_lib

NAMESPACE = "trak_jax.encode"


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
  """What the encode job needs besides the pipeline.

  Attributes:
    corpus: Corpus spec: a file, glob, comma-separated list, or tfds:/seqio:.
    checkpoint: Orbax checkpoint (training output dir or step dir).
    output_dir: The store directory.
    encoder_config: The encoder's stages (only correction and projection
      affect the stored φ).
    num_shards: Output shards.
    batch_size: Examples per encoder call (a multiple of the data axis).
    max_len: Tokens per example (default: the model's max_len).
    truncate: Truncate long examples; if False they are rejected.
    mesh_data: `data` mesh axis size (-1: the rest).
    mesh_model: `model` mesh axis size.
  """

  corpus: str
  checkpoint: str
  output_dir: str
  encoder_config: encoder_lib.EncoderConfig
  num_shards: int = 4
  batch_size: int = 32
  max_len: int | None = None
  truncate: bool = True
  mesh_data: int = -1
  mesh_model: int = 1


class ReadSource(beam.DoFn):
  """A corpus source -> (location, raw record)."""

  def __init__(self):
    self._read = Metrics.counter(NAMESPACE, "examples_read")

  def process(self, source: str) -> Iterator[tuple[str, Any]]:
    for location, raw in data_lib.raw_corpus_records(source):
      self._read.inc()
      yield location, raw


class Parse(beam.DoFn):
  """(location, raw) -> (shard, example), or a Rejection on `rejected`."""

  REJECTED = "rejected"

  def __init__(self, num_shards: int, done_shards: Sequence[int]):
    self._num_shards = num_shards
    self._done = frozenset(done_shards)
    self._rejected = Metrics.counter(NAMESPACE, "examples_rejected")

  def process(self, element: tuple[str, Any]):
    location, raw = element
    try:
      example = data_lib.parse_raw(location, raw)
    except data_lib.MalformedInputError as error:
      self._rejected.inc()
      yield beam.pvalue.TaggedOutput(
        self.REJECTED,
        store_lib.Rejection(error.example_id, error.reason, location),
      )
      return
    shard = store_lib.shard_of(example.id, self._num_shards)
    if shard not in self._done:
      yield shard, (input_order(location), example)


class EncodeShard(beam.DoFn):
  """(shard, examples) -> ShardInfo, writing the shard's files."""

  def __init__(self, options: EncodeOptions, fingerprint):
    self._options = options
    self._fingerprint = fingerprint
    self._encoded = Metrics.counter(NAMESPACE, "examples_encoded")
    self._rejected = Metrics.counter(NAMESPACE, "examples_rejected")
    self._tokens = Metrics.counter(NAMESPACE, "tokens")
    self._batch_tokens = Metrics.distribution(NAMESPACE, "batch_tokens")

  def setup(self):
    from trak_jax import checkpoint as checkpoint_lib
    from trak_jax import partitioning

    opts = self._options
    mesh = partitioning.make_mesh(data=opts.mesh_data, model=opts.mesh_model)
    loaded = checkpoint_lib.load_checkpoint(opts.checkpoint, mesh=mesh)
    self._encoder = encoder_lib.from_checkpoint(loaded, opts.encoder_config)
    self._encoder.fingerprint.check_matches(
      self._fingerprint, what="encoder built on the worker"
    )
    self._tokenizer = loaded.tokenizer
    self._max_len = opts.max_len or loaded.model_config.max_len

  def process(
    self,
    element: tuple[
      int, Iterable[tuple[tuple[str, int], data_lib.CorpusExample]]
    ],
  ) -> Iterator[store_lib.ShardInfo]:
    index, examples = element
    rejected: list[store_lib.Rejection] = []
    tokenized = tokenize_examples(
      unique(examples, rejected),
      rejected,
      tokenizer=self._tokenizer,
      max_len=self._max_len,
      truncate=self._options.truncate,
    )
    records = []
    for chunk in _chunks(tokenized, self._options.batch_size):
      records.extend(self._encode(chunk, rejected))
    self._encoded.inc(len(records))
    self._rejected.inc(len(rejected))
    yield store_lib.write_shard(
      self._options.output_dir,
      index=index,
      num_shards=self._options.num_shards,
      records=records,
      rejected=rejected,
      fingerprint=self._fingerprint,
    )

  def _encode(self, chunk, rejected) -> list[store_lib.EncodedRecord]:
    batch = data_lib.pad_batch(
      [(ids, mask) for _, ids, mask in chunk],
      seq_len=self._max_len,
      num_rows=self._options.batch_size,
    )
    out = encoder_lib.host_features(self._encoder, batch)
    self._batch_tokens.update(int(batch.loss_mask.sum()))
    records = to_records(chunk, out, rejected)
    self._tokens.inc(sum(r.num_tokens for r in records))
    return records


def tokenize_examples(
  examples: Iterable[data_lib.CorpusExample],
  rejected: list[store_lib.Rejection],
  *,
  tokenizer,
  max_len: int,
  truncate: bool,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """(id, token ids, mask) of each example; too long ones go to `rejected`."""
  out = []
  for example in examples:
    try:
      ids, mask = data_lib.tokenize_text(
        tokenizer, example.text, max_len=max_len, truncate=truncate
      )
    except data_lib.TooLongError as error:
      rejected.append(store_lib.Rejection(example.id, f"too long: {error}"))
      continue
    out.append((example.id, ids, mask))
  return out


def to_records(
  rows: Sequence[tuple[str, np.ndarray, np.ndarray]],
  out: encoder_lib.Encoded,
  rejected: list[store_lib.Rejection],
) -> list[store_lib.EncodedRecord]:
  """Store records of a batch's first `len(rows)` rows of host features;
  rows with a non-finite gradient go to `rejected`."""
  records = []
  for row, (example_id, _, _) in enumerate(rows):
    if not out.finite[row]:
      rejected.append(store_lib.Rejection(example_id, "non-finite gradient"))
      continue
    records.append(
      store_lib.EncodedRecord(
        id=example_id,
        vector=out.features[row],
        loss=float(out.losses[row]),
        num_tokens=int(out.num_tokens[row]),
      )
    )
  return records


def input_order(location: str) -> tuple[str, int]:
  """("source", number) of "source:line N" / "source:record N" locations."""
  source, _, position = location.rpartition(":")
  number = position.split()[-1]
  return (source, int(number)) if number.isdigit() else (location, 0)


def unique(ordered_examples, rejected):
  """Examples sorted by id; later repeats of an id (in input order) are
  rejected."""
  seen = set()
  for order, example in sorted(ordered_examples, key=lambda e: (e[1].id, e[0])):
    if example.id in seen:
      rejected.append(
        store_lib.Rejection(
          example.id, "duplicate id", f"{order[0]}:{order[1]}"
        )
      )
      continue
    seen.add(example.id)
    yield example


def _chunks(items: Sequence[Any], size: int):
  for start in range(0, len(items), size):
    yield items[start : start + size]


class Finalize(beam.DoFn):
  """Writes manifest, rejected.jsonl and COMPLETED once all shards exist."""

  def __init__(self, options: EncodeOptions, fingerprint, done):
    self._options = options
    self._fingerprint = fingerprint
    self._done = list(done)

  def process(self, _, new_shards, parse_rejected, num_read):
    yield store_lib.finalize(
      self._options.output_dir,
      shards=self._done + list(new_shards),
      parse_rejected=list(parse_rejected),
      fingerprint=self._fingerprint,
      encoder_config=self._options.encoder_config.to_dict(),
      num_read=num_read,
      source=self._options.corpus,
    )


class EncodeCorpus(beam.PTransform):
  """Sources -> encoding store; outputs the manifest."""

  def __init__(self, options: EncodeOptions):
    super().__init__()
    self._options = options

  def expand(self, sources):
    opts = self._options
    fingerprint = encoder_lib.fingerprint_for_checkpoint(
      opts.checkpoint, opts.encoder_config
    )
    done = [
      info
      for index in range(opts.num_shards)
      if (
        info := store_lib.done_shard(
          opts.output_dir, index, opts.num_shards, fingerprint
        )
      )
    ]
    raw = sources | "Read" >> beam.ParDo(ReadSource())
    parsed = raw | "Parse" >> beam.ParDo(
      Parse(opts.num_shards, [d.index for d in done])
    ).with_outputs(Parse.REJECTED, main="examples")
    shards = (
      parsed.examples
      | "GroupByShard" >> beam.GroupByKey()
      | "EncodeShard" >> beam.ParDo(EncodeShard(opts, fingerprint))
    )
    num_read = raw | "CountRead" >> beam.combiners.Count.Globally()
    return (
      sources.pipeline
      | "Once" >> beam.Create([None])
      | "Finalize"
      >> beam.ParDo(
        Finalize(opts, fingerprint, done),
        beam.pvalue.AsList(shards),
        beam.pvalue.AsList(parsed[Parse.REJECTED]),
        beam.pvalue.AsSingleton(num_read),
      )
    )


def run_pipeline(pipeline: beam.Pipeline, *, options: EncodeOptions):
  """Builds the encode job on `pipeline`, runs it and waits.

  Returns:
    The pipeline result (its metrics hold the counters).
  """
  sources = data_lib.expand_sources(options.corpus)
  _ = pipeline | "Sources" >> beam.Create(sources) | EncodeCorpus(options)
  result = pipeline.run()
  result.wait_until_finish()
  return result


def counters(result) -> dict[str, int]:
  """The job's counters by name."""
  query = result.metrics().query(
    beam.metrics.MetricsFilter().with_namespace(NAMESPACE)
  )
  totals: dict[str, int] = {}
  for counter in query["counters"]:
    name = counter.key.metric.name
    totals[name] = totals.get(name, 0) + counter.committed
  return totals
