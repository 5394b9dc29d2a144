"""Beam job: encode a corpus into an encoding store (DESIGN.md section 2).

    sources -> read (file:line locations) -> parse       -> rejected
            -> key by shard (stable hash of id), skip done shards
            -> GroupByKey -> EncodeShard (JAX encoder, loaded in setup())
            -> shard files + metadata -> finalize: manifest, rejected.jsonl,
               COMPLETED (last)

A shard is encoded and written by one DoFn call, atomically, so a retried
worker or a rerun rewrites whole shards and never duplicates an id. The model
is loaded once per DoFn instance in `setup()`.

Within a shard, examples are encoded longest first in batches of
`batch_size`, each padded only to the smallest of `length_buckets` that fits
it (so a few programs compile, and short passages do not pay for 64 tokens);
records are written in id order whatever the batching, and the encoder's
output does not depend on padding or batch composition.
"""

import dataclasses
import functools
import hashlib
import importlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import jax
from apache_beam.metrics import Metrics

from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import projection as projection_lib
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
    length_buckets: Sequence lengths a batch is padded to (the smallest
      that fits its longest example; `max_len` is always the last). Empty:
      every batch is padded to `max_len`, in id order.
    compilation_cache_dir: JAX's persistent compilation cache on the
      workers, so a rerun or another worker loads the compiled programs
      instead of compiling them; None leaves JAX's setting alone.
    energy_queries: Query JSONL whose gradients share in measuring the
      projection layout's block energies (`ProjectionSpec.allocation`
      "energy"); None: the corpus sample stands for the queries too.
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
  length_buckets: tuple[int, ...] = (16, 32, 48)
  compilation_cache_dir: str | None = None
  energy_queries: str | None = None


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
    parsed = parse_record(*element, num_shards=self._num_shards)
    if isinstance(parsed, store_lib.Rejection):
      self._rejected.inc()
      yield beam.pvalue.TaggedOutput(self.REJECTED, parsed)
    elif parsed[0] not in self._done:
      yield parsed


def parse_record(
  location: str, raw: Any, *, num_shards: int
) -> (
  tuple[int, tuple[tuple[str, int], data_lib.CorpusExample]]
  | store_lib.Rejection
):
  """(shard, (input order, example)) of a raw record, or its rejection."""
  try:
    example = data_lib.parse_raw(location, raw)
  except data_lib.MalformedInputError as error:
    return store_lib.Rejection(error.example_id, error.reason, location)
  shard = store_lib.shard_of(example.id, num_shards)
  return shard, (input_order(location), example)


class EncodeShard(beam.DoFn):
  """(shard, examples) -> ShardInfo, writing the shard's files.

  Besides the counters it reports where its time goes, as distributions in
  milliseconds: `setup_ms` (checkpoint, matrices; once per instance),
  `shard_ms` (one whole `process` call: tokenize, encode, write),
  `encoder_ms` (one encoder call) and `first_call_ms` (the part of them
  that was the first call on a batch shape: tracing, and compiling or
  loading the program from the compilation cache).
  """

  def __init__(self, options: EncodeOptions, fingerprint):
    self._options = options
    self._fingerprint = fingerprint
    self._encoded = Metrics.counter(NAMESPACE, "examples_encoded")
    self._rejected = Metrics.counter(NAMESPACE, "examples_rejected")
    self._tokens = Metrics.counter(NAMESPACE, "tokens")
    self._batch_tokens = Metrics.distribution(NAMESPACE, "batch_tokens")
    self._setup_ms = Metrics.distribution(NAMESPACE, "setup_ms")
    self._shard_ms = Metrics.distribution(NAMESPACE, "shard_ms")
    self._encoder_ms = Metrics.distribution(NAMESPACE, "encoder_ms")
    self._first_call_ms = Metrics.distribution(NAMESPACE, "first_call_ms")

  def setup(self):
    from trak_jax import checkpoint as checkpoint_lib
    from trak_jax import partitioning

    start = time.perf_counter()
    opts = self._options
    _import_in_background("tensorflow")  # The shard writer's; seconds.
    enable_compilation_cache(opts.compilation_cache_dir)
    mesh = partitioning.make_mesh(data=opts.mesh_data, model=opts.mesh_model)
    loaded = checkpoint_lib.load_checkpoint(opts.checkpoint, mesh=mesh)
    self._encoder = encoder_lib.from_checkpoint(loaded, opts.encoder_config)
    self._encoder.fingerprint.check_matches(
      self._fingerprint, what="encoder built on the worker"
    )
    self._tokenizer = loaded.tokenizer
    self._max_len = opts.max_len or loaded.max_len
    self._shapes_seen: set[tuple[int, ...]] = set()
    # Metrics can only be reported from `process`; the first call does.
    self._unreported_setup_ms = _ms_since(start)

  def process(
    self,
    element: tuple[
      int, Iterable[tuple[tuple[str, int], data_lib.CorpusExample]]
    ],
  ) -> Iterator[store_lib.ShardInfo]:
    start = time.perf_counter()
    self.report_setup()
    index, examples = element
    rejected: list[store_lib.Rejection] = []
    tokenized = self.tokenize_shard(examples, rejected)
    records, failed = encode_tokenized(
      self.timed_features,
      tokenized,
      batch_size=self._options.batch_size,
      max_len=self._max_len,
      length_buckets=self._options.length_buckets,
    )
    rejected.extend(failed)
    self._encoded.inc(len(records))
    self._rejected.inc(len(rejected))
    self._tokens.inc(sum(r.num_tokens for r in records))
    info = store_lib.write_shard(
      self._options.output_dir,
      index=index,
      num_shards=self._options.num_shards,
      records=records,
      rejected=rejected,
      fingerprint=self._fingerprint,
    )
    self._shard_ms.update(_ms_since(start))
    yield info

  def report_setup(self) -> None:
    """Reports `setup_ms`, once (metrics can only be reported from
    `process`)."""
    if self._unreported_setup_ms is not None:
      self._setup_ms.update(self._unreported_setup_ms)
      self._unreported_setup_ms = None

  def tokenize_shard(
    self,
    examples: Iterable[tuple[tuple[str, int], data_lib.CorpusExample]],
    rejected: list[store_lib.Rejection],
  ) -> "list[Tokenized]":
    """A shard's examples, one per id, tokenized; repeats and too long
    examples are appended to `rejected`."""
    return tokenize_examples(
      self._tokenizer,
      unique(examples, rejected),
      max_len=self._max_len,
      truncate=self._options.truncate,
      rejected=rejected,
    )

  def timed_features(self, batch: data_lib.Batch) -> encoder_lib.Encoded:
    """Host φ of `batch`, its time and shape reported."""
    start = time.perf_counter()
    out = encoder_lib.host_features(self._encoder, batch)
    elapsed = _ms_since(start)
    self._encoder_ms.update(elapsed)
    if batch.token_ids.shape not in self._shapes_seen:
      self._shapes_seen.add(batch.token_ids.shape)
      self._first_call_ms.update(elapsed)
    self._batch_tokens.update(int(batch.loss_mask.sum()))
    return out


def _import_in_background(module: str) -> None:
  """Starts importing `module` on a thread, so that its import overlaps the
  checkpoint restore and the first shard's encoding instead of following
  them; a later `import` waits for it to finish."""
  threading.Thread(
    target=importlib.import_module, args=(module,), daemon=True
  ).start()


def _ms_since(start: float) -> int:
  return int(round((time.perf_counter() - start) * 1000))


def enable_compilation_cache(directory: str | None) -> None:
  """Points JAX's persistent compilation cache at `directory` (if given).

  Every program is cached, however quickly it compiled: the encoder's
  start-up compiles dozens of small ones (the projection matrices' shapes).
  A directory JAX already uses is kept.
  """
  if not directory or jax.config.jax_compilation_cache_dir:
    return
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


class Tokenized(NamedTuple):
  """One example, tokenized."""

  id: str
  token_ids: Any  # [n] int32, n <= max_len
  loss_mask: Any  # [n] float32


def tokenize_examples(
  tokenizer: Any,
  examples: Iterable[data_lib.CorpusExample],
  *,
  max_len: int,
  truncate: bool,
  rejected: list[store_lib.Rejection],
) -> list[Tokenized]:
  """Tokenizes training examples; too long ones (if not `truncate`) are
  appended to `rejected`."""
  out = []
  for example in examples:
    try:
      ids, mask = data_lib.tokenize_text(
        tokenizer, example.text, max_len=max_len, truncate=truncate
      )
    except data_lib.TooLongError as error:
      rejected.append(store_lib.Rejection(example.id, f"too long: {error}"))
      continue
    out.append(Tokenized(example.id, ids, mask))
  return out


class PlannedBatch(NamedTuple):
  """A padded batch and the examples in its rows."""

  rows: tuple[int, ...]  # [filled rows] positions in the tokenized list
  batch: data_lib.Batch  # [batch_size, seq_len], seq_len a bucket length


def bucket_lengths(length_buckets: Sequence[int], max_len: int) -> list[int]:
  """The sorted bucket lengths below `max_len`, then `max_len`."""
  return sorted({n for n in length_buckets if 0 < n < max_len} | {max_len})


def make_batches(
  tokenized: Sequence[Tokenized],
  *,
  batch_size: int,
  max_len: int,
  length_buckets: Sequence[int] = (),
) -> Iterator[PlannedBatch]:
  """Batches of `batch_size` rows, each padded to a bucket length.

  With buckets the examples go longest first (ties in input order), so each
  batch holds similar lengths and only the last, shortest batch is partly
  empty. Without them batches follow input order, padded to `max_len`.
  """
  buckets = bucket_lengths(length_buckets, max_len)
  order = list(range(len(tokenized)))
  if len(buckets) > 1:
    order.sort(key=lambda i: -len(tokenized[i].token_ids))
  for chunk in _chunks(order, batch_size):
    rows = tuple(chunk)
    longest = max(len(tokenized[i].token_ids) for i in rows)
    seq_len = next(n for n in buckets if n >= longest)
    yield PlannedBatch(
      rows,
      data_lib.pad_batch(
        [(tokenized[i].token_ids, tokenized[i].loss_mask) for i in rows],
        seq_len=seq_len,
        num_rows=batch_size,
      ),
    )


def _chunks(items: Sequence[Any], size: int):
  for start in range(0, len(items), size):
    yield items[start : start + size]


def encode_tokenized(
  features_fn: Any,
  tokenized: Sequence[Tokenized],
  *,
  batch_size: int,
  max_len: int,
  length_buckets: Sequence[int] = (),
) -> tuple[list[store_lib.EncodedRecord], list[store_lib.Rejection]]:
  """Encodes examples with `features_fn` (a Batch -> host `Encoded`).

  Returns:
    The records and the non-finite rejections, both in `tokenized` order.
  """
  results: list[Any] = [None] * len(tokenized)
  for encoded in encode_batches(
    features_fn,
    tokenized,
    batch_size=batch_size,
    max_len=max_len,
    length_buckets=length_buckets,
  ):
    for position, result in encoded:
      results[position] = result
  records = [r for r in results if isinstance(r, store_lib.EncodedRecord)]
  failed = [r for r in results if isinstance(r, store_lib.Rejection)]
  return records, failed


def encode_batches(
  features_fn: Any,
  tokenized: Sequence[Tokenized],
  *,
  batch_size: int,
  max_len: int,
  length_buckets: Sequence[int] = (),
) -> Iterator[list[tuple[int, store_lib.EncodedRecord | store_lib.Rejection]]]:
  """Encodes examples batch by batch (`make_batches`), as they are made.

  Args:
    features_fn: A Batch -> host `Encoded`.
    tokenized: The examples.
    batch_size: Rows per batch.
    max_len: The longest bucket.
    length_buckets: As `make_batches`.

  Yields:
    Per batch, (position in `tokenized`, record or non-finite rejection)
    of each of its examples.
  """
  for planned in make_batches(
    tokenized,
    batch_size=batch_size,
    max_len=max_len,
    length_buckets=length_buckets,
  ):
    out = features_fn(planned.batch)
    yield [
      (position, record_or_rejection(tokenized[position].id, out, row))
      for row, position in enumerate(planned.rows)
    ]


def record_or_rejection(example_id: str, out: encoder_lib.Encoded, row: int):
  """The store record of row `row` of host features, or its rejection."""
  if not out.finite[row]:
    return store_lib.Rejection(example_id, "non-finite gradient")
  return store_lib.EncodedRecord(
    id=example_id,
    vector=out.features[row],
    loss=float(out.losses[row]),
    num_tokens=int(out.num_tokens[row]),
  )


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


def recorded_config(
  directory: str, num_shards: int
) -> encoder_lib.EncoderConfig | None:
  """The encoder config a (partly) written store recorded, if any."""
  manifest = os.path.join(directory, store_lib.MANIFEST)
  if files.exists(manifest):
    with files.open(manifest) as f:
      return encoder_lib.EncoderConfig.from_dict(json.load(f)["encoder_config"])
  for index in range(num_shards):
    meta = os.path.join(directory, store_lib.shard_name(index, num_shards))
    if files.exists(meta.replace(".tfrecord", ".json")):
      info = store_lib.read_shard_info(directory, index, num_shards)
      projection = json.loads(info.fingerprint["projection"])
      projection.pop("layout", None)
      return projection_lib.ProjectionSpec.from_dict(projection)
  return None


def energy_sample(
  corpus: str, *, size: int, seed: int
) -> list[data_lib.CorpusExample]:
  """`size` examples chosen by a seeded hash of their ids, from at most the
  first 16·size examples of the corpus."""
  examples = []
  for example in data_lib.read_corpus(corpus, skip_malformed=True):
    examples.append(example)
    if len(examples) >= 16 * size:
      break

  def key(example):
    return hashlib.sha1(f"{seed}:{example.id}".encode()).digest()

  return sorted(examples, key=key)[:size]


SECOND_MOMENTS = "second_moments.npz"  # an estimated V, beside the store


def one_device_loader(checkpoint: str) -> Callable[[], Any]:
  """Loads `checkpoint` on one local device, once, when first called.

  One local device: every process of a multi-process job measures the same
  numbers on its own.
  """

  @functools.cache
  def load():
    from trak_jax import checkpoint as checkpoint_lib
    from trak_jax import partitioning

    mesh = partitioning.make_mesh(devices=jax.local_devices()[:1])
    return checkpoint_lib.load_checkpoint(checkpoint, mesh=mesh)

  return load


def measured_options(options: EncodeOptions) -> EncodeOptions:
  """`options` with what the job measures before it encodes: an estimated
  V (`estimate_correction`), then the layout (`measure_layout`), loading the
  checkpoint at most once."""
  load = one_device_loader(options.checkpoint)
  return measure_layout(estimate_correction(options, load), load)


def estimate_correction(
  options: EncodeOptions, load: Callable[[], Any] | None = None
) -> EncodeOptions:
  """`options` whose "estimated" correction has its saved V.

  V is the mean squared per-example gradient over a seeded corpus sample
  of `estimate_sample` examples, saved beside the store (`SECOND_MOMENTS`)
  once; a rerun takes the saved one. Its digest enters the fingerprint, so
  queries or a Hessian made with another V are refused by name. `load`
  gives the checkpoint (default: `one_device_loader`).
  """
  spec = options.encoder_config.correction
  if spec.kind != "estimated" or spec.estimate_path is not None:
    return options
  path = os.path.join(options.output_dir, SECOND_MOMENTS)
  loaded = (load or one_device_loader(options.checkpoint))()
  if files.exists(path):
    fix = correction_lib.load_estimate(
      dataclasses.replace(spec, estimate_path=path), loaded.params
    )
    digest = correction_lib.estimate_digest(fix)
  else:
    sample = corpus_batches(
      loaded.tokenizer,
      energy_sample(
        options.corpus,
        size=spec.estimate_sample,
        seed=options.encoder_config.projection.seed,
      ),
      options=options,
      max_len=options.max_len or loaded.max_len,
    )
    fix = encoder_lib.estimated_correction(loaded, spec, sample)
    files.makedirs(options.output_dir)
    digest = correction_lib.save_estimate(fix, path)
  spec = dataclasses.replace(spec, estimate_path=path, estimate_digest=digest)
  return dataclasses.replace(
    options,
    encoder_config=dataclasses.replace(options.encoder_config, correction=spec),
  )


def measure_layout(
  options: EncodeOptions, load: Callable[[], Any] | None = None
) -> EncodeOptions:
  """`options` whose projection layout has its block energies.

  A store that recorded them (a rerun) gives its own; otherwise they are
  measured on a seeded corpus sample and, if given, the energy queries.
  `load` gives the checkpoint (default: `one_device_loader`).
  """
  config = options.encoder_config
  if not config.projection.needs_energy:
    return options
  recorded = recorded_config(options.output_dir, options.num_shards)
  if isinstance(recorded, projection_lib.ProjectionSpec):
    recorded = dataclasses.replace(config, projection=recorded)
  if recorded is not None:
    config = encoder_lib.with_recorded_layout(config, recorded.to_dict())
    if not config.projection.needs_energy:
      return dataclasses.replace(options, encoder_config=config)
  loaded = (load or one_device_loader(options.checkpoint))()
  max_len = options.max_len or loaded.max_len
  spec = config.projection
  corpus = corpus_batches(
    loaded.tokenizer,
    energy_sample(options.corpus, size=spec.energy_sample, seed=spec.seed),
    options=options,
    max_len=max_len,
  )
  corpus_shares = encoder_lib.block_shares(loaded, config, corpus)
  query_shares = None
  if options.energy_queries:
    queries = data_lib.read_queries(options.energy_queries)[
      : spec.energy_sample
    ]
    query_shares = encoder_lib.block_shares(
      loaded, config, query_batches(loaded.tokenizer, queries, options, max_len)
    )
  config = encoder_lib.with_block_energy(config, corpus_shares, query_shares)
  return dataclasses.replace(options, encoder_config=config)


def corpus_batches(tokenizer, examples, *, options, max_len):
  """The padded batches of `examples`, as the job would make them."""
  tokenized = tokenize_examples(
    tokenizer, examples, max_len=max_len, truncate=True, rejected=[]
  )
  return [
    planned.batch
    for planned in make_batches(
      tokenized,
      batch_size=options.batch_size,
      max_len=max_len,
      length_buckets=options.length_buckets,
    )
  ]


def query_batches(tokenizer, queries, options, max_len):
  """Padded batches of queries (loss on the target); too long ones skipped."""
  sequences = []
  for query in queries:
    try:
      sequences.append(
        data_lib.tokenize_query(
          tokenizer, query.prompt, query.target, max_len=max_len
        )
      )
    except data_lib.TooLongError:
      continue
  return [
    data_lib.pad_batch(chunk, seq_len=max_len, num_rows=options.batch_size)
    for chunk in _chunks(sequences, options.batch_size)
  ]


class EncodeCorpus(beam.PTransform):
  """Sources -> encoding store; outputs the manifest."""

  def __init__(self, options: EncodeOptions):
    super().__init__()
    self._options = options

  def expand(self, sources):
    opts = measured_options(self._options)
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


def distributions(result) -> dict[str, dict[str, int]]:
  """The job's distributions by name: {"sum", "count", "min", "max"}."""
  query = result.metrics().query(
    beam.metrics.MetricsFilter().with_namespace(NAMESPACE)
  )
  totals: dict[str, dict[str, int]] = {}
  for distribution in query["distributions"]:
    value = distribution.committed
    if value is None or not value.count:
      continue
    name = distribution.key.metric.name
    total = totals.setdefault(
      name, {"sum": 0, "count": 0, "min": value.min, "max": value.max}
    )
    total["sum"] += value.sum
    total["count"] += value.count
    total["min"] = min(total["min"], value.min)
    total["max"] = max(total["max"], value.max)
  return totals
