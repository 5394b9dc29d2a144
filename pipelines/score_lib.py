"""Beam job: score the corpus while it is encoded, with no store.

    queries -> batches -> encode once, finished (R^(-1/2), norm)   side input
    sources -> read -> parse -> key by shard -> GroupByKey
            -> EncodeAndScoreShard: per batch, φ -> finished -> exact top-k
               against every query, merged into each query's running top-k
    partial top-k per (query, method) -> MergeTopK
    -> report.jsonl, metrics.json, report.html, rejected.jsonl,
       score.json, COMPLETED (last)

DESIGN.md section 2: when the queries are known up front the corpus can be
scored while it is encoded. R comes first, from a Hessian fitted on a
sample (`trak-jax-hessian` on a store of the sample); its fingerprint must
be the encoder's. The stages are the other jobs' own: the encode job's
reading, sharding, deduplication, batching and encoder (`encode_lib`), the
index job's finishing (`index_lib`), the retrieve job's query encoding,
merge and report (`retrieve_lib`). So the report is the one store -> index
(kind "exact") -> retrieve writes: the same proponents and scores.

A shard's encodings are finished and scored a batch at a time: a worker
holds its shard's examples, one batch of encodings, the query encodings and
each query's top-k, never the shard's encodings.
"""

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import encode_lib, index_lib, retrieve_lib
from pipelines import queries as queries_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import hessian as hessian_core
from trak_jax import index as index_core
from trak_jax import projection as projection_lib
from trak_jax import store as store_lib

NAMESPACE = "trak_jax.score"
INFO = "score.json"  # What the job used and counted, beside the report.
REJECTED = "rejected"  # EncodeAndScoreShard's output of rejections
SCORED = "scored"  # EncodeAndScoreShard's output of per-shard counts


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
  """Inputs and outputs of the score job.

  Attributes:
    encode: The corpus, checkpoint, encoder config and batching, as the
      encode job takes them; `output_dir` receives the report (and an
      estimated V, if the correction is "estimated"), and no store.
    queries: Query JSONL.
    hessian_dir: The fitted Hessian (needed when the config has one).
    method: The report's name for the method.
    k: Proponents per query.
    query_batch_size: Queries per encoder call (a multiple of the data
      axis).
  """

  encode: encode_lib.EncodeOptions
  queries: str
  hessian_dir: str | None
  method: str = "trackstar"
  k: int = 10
  query_batch_size: int = 32

  @property
  def output_dir(self) -> str:
    return self.encode.output_dir

  @property
  def config(self) -> encoder_lib.EncoderConfig:
    return self.encode.encoder_config

  def retrieve_options(self) -> retrieve_lib.RetrieveOptions:
    """What the retrieve job's query stage reads of these options."""
    return retrieve_lib.RetrieveOptions(
      queries=self.queries,
      checkpoint=self.encode.checkpoint,
      corpus=self.encode.corpus,
      indexes=(),
      output_dir=self.output_dir,
      k=self.k,
      batch_size=self.query_batch_size,
    )


def load_hessian(options: ScoreOptions, fingerprint):
  """(R^(-1/2), its record), both None without a Hessian in the config.

  Raises:
    encoder.FingerprintMismatchError: Naming the differing field, if the
      Hessian was fitted on features of another checkpoint or encoder.
    index.HessianMismatchError: If its hessian.json and R^(-1/2) disagree.
  """
  return index_lib.fitted_preconditioner(
    encoder_config=options.config,
    hessian_dir=options.hessian_dir,
    fingerprint=fingerprint,
  )


class EncodeQueries(retrieve_lib.SearchQueries):
  """A batch of queries -> (query id, partial record), and on ENCODED
  (method, query ids, [batch, d] float32 finished encodings): the retrieve
  job's `SearchQueries` with one method, whose corpus is scored as it is
  encoded."""

  def __init__(self, options: ScoreOptions, fingerprint, digest):
    super().__init__(options.retrieve_options())
    self._score_options = options
    self._fingerprint = fingerprint
    self._digest = digest

  def load_methods(self, loaded) -> dict[str, tuple[Any, Any]]:
    options = self._score_options
    preconditioner, record = load_hessian(options, self._fingerprint)
    index_lib.check_unchanged(
      record,
      self._digest,
      hessian_dir=options.hessian_dir,
      output=f"scores {options.output_dir}",
    )
    encoder = encoder_lib.from_checkpoint(
      loaded, options.config, preconditioner=preconditioner
    )
    encoder.fingerprint.check_matches(
      self._fingerprint, what="query encoder built on the worker"
    )
    return {options.method: (encoder, None)}


class EncodeAndScoreShard(encode_lib.EncodeShard):
  """(shard, examples) -> ((query id, method), the shard's top-k of that
  query) for every query in the side input of encoded query batches; on
  REJECTED the shard's rejections, on SCORED its count of encoded examples.

  The encode job's `EncodeShard` (setup, deduplication, tokenization,
  batching, metrics), which scores each batch instead of writing the shard.
  """

  def __init__(self, options: ScoreOptions, fingerprint, digest):
    super().__init__(options.encode, fingerprint)
    self._score_options = options
    self._digest = digest
    self._merge = retrieve_lib.MergeTopK(options.k)  # A running top-k each.
    self._scored = Metrics.counter(NAMESPACE, "examples_scored")

  def setup(self):
    super().setup()
    options = self._score_options
    preconditioner, record = load_hessian(options, self._fingerprint)
    index_lib.check_unchanged(
      record,
      self._digest,
      hessian_dir=options.hessian_dir,
      output=f"scores {options.output_dir}",
    )
    self._finish = index_lib.make_finisher(
      preconditioner, normalize=options.config.normalize
    )

  def process(self, element, encoded_queries) -> Iterator[Any]:
    self.report_setup()
    method = self._score_options.method
    queries = [b for b in encoded_queries if b[0] == method]
    rejected: list[store_lib.Rejection] = []
    top_k, scored = self._top_k(element[1], queries, rejected)
    self._encoded.inc(scored)
    self._scored.inc(scored)
    self._rejected.inc(len(rejected))
    for query_id, accumulator in top_k.items():
      yield (query_id, method), self._merge.extract_output(accumulator)
    for rejection in rejected:
      yield beam.pvalue.TaggedOutput(REJECTED, rejection)
    yield beam.pvalue.TaggedOutput(SCORED, scored)

  def _top_k(self, examples, queries, rejected):
    """({query id: the shard's top-k}, examples scored); rejections are
    appended to `rejected`."""
    top_k = {
      query_id: self._merge.create_accumulator()
      for _, query_ids, _ in queries
      for query_id in query_ids
    }
    scored = 0
    for encoded in encode_lib.encode_batches(
      self.timed_features,
      self.tokenize_shard(examples, rejected),
      batch_size=self._options.batch_size,
      max_len=self._max_len,
      length_buckets=self._options.length_buckets,
    ):
      results = [result for _, result in encoded]
      records = [r for r in results if isinstance(r, store_lib.EncodedRecord)]
      rejected.extend(r for r in results if isinstance(r, store_lib.Rejection))
      if records:
        self._merge_batch(top_k, records, queries)
      scored += len(records)
    return top_k, scored

  def _merge_batch(self, top_k, records, queries) -> None:
    """Merges one batch's top-k of each query into `top_k` (in place).

    The batch is finished as the index job finishes a store shard, and
    held as an index shard (rows by id, vectors in the store's dtype), so
    scores and ties are those of the index.
    """
    shard = index_core.in_id_order(
      [r.id for r in records],
      index_lib.finish_records(self._finish, records),
      dtype=self._score_options.config.dtype,
    )
    for _, query_ids, features in queries:
      partials = index_core.search_shard(
        shard, features, k=self._score_options.k
      )
      for query_id, partial in zip(query_ids, partials, strict=True):
        top_k[query_id] = self._merge.add_input(top_k[query_id], partial)


def corpus_texts(parsed):
  """(shard, (input order, example)) -> (example id, text)."""
  return parsed | "Texts" >> beam.Map(lambda kv: (kv[1][1].id, kv[1][1].text))


class Complete(beam.DoFn):
  """Writes rejected.jsonl (the corpus's rejections and the queries too
  long for the model), score.json and, last, COMPLETED, once the report is
  written (its summary is a side input)."""

  def __init__(
    self,
    options: ScoreOptions,
    recorded: dict[str, Any],
    query_rejected: list[store_lib.Rejection],
  ):
    self._options = options
    self._recorded = recorded
    self._query_rejected = query_rejected

  def process(self, _, summary, rejected, scored, num_read):
    counts = {
      "read": num_read,
      "scored": sum(scored),
      "rejected": len(rejected),
      "queries": summary["queries"],
      "queries_rejected": len(self._query_rejected),
    }
    if counts["scored"] + counts["rejected"] != num_read:
      raise store_lib.StoreError(
        f"{self._options.output_dir}: {counts['scored']} scored + "
        f"{counts['rejected']} rejected != {num_read} read"
      )
    directory = self._options.output_dir
    store_lib.write_rejected(
      directory, [r.to_dict() for r in [*rejected, *self._query_rejected]]
    )
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    info = {**self._recorded, "counts": counts, "created": created}
    files.write_json(os.path.join(directory, INFO), info)
    files.write_marker(directory, created)
    yield info


def _recorded(options: ScoreOptions, fingerprint, hessian_record) -> dict:
  """What score.json records of the inputs, encoder and Hessian."""
  return {
    "corpus": options.encode.corpus,
    "queries": options.queries,
    "checkpoint": options.encode.checkpoint,
    "method": options.method,
    "k": options.k,
    "fingerprint": fingerprint.to_dict(),
    "encoder_config": options.config.to_dict(),
    "hessian_dir": options.hessian_dir,
    "hessian": hessian_record,
  }


def with_hessian_layout(
  config: encoder_lib.EncoderConfig, hessian_dir: str | None
) -> encoder_lib.EncoderConfig:
  """`config` whose projection takes the block energies the Hessian's
  fingerprint records, if it waits for measured ones.

  So a Hessian fitted on a store of a corpus sample fits the encoder of the
  whole corpus; every other field is still compared (`prepare`).
  """
  if not (config.projection.needs_energy and hessian_dir):
    return config
  path = os.path.join(hessian_dir, hessian_core.HESSIAN_INFO)
  if config.hessian.kind == "none" or not files.exists(path):
    return config
  with files.open(path) as f:
    projection = json.loads(json.load(f)["fingerprint"]["projection"])
  projection.pop("layout", None)
  recorded = projection_lib.ProjectionSpec.from_dict(projection)
  if recorded.block_energy is None:
    return config
  return dataclasses.replace(
    config,
    projection=dataclasses.replace(
      config.projection, block_energy=recorded.block_energy
    ),
  )


def prepare(options: ScoreOptions):
  """The measured options (layout, V), their fingerprint, and the Hessian's
  record, checked before anything runs.

  Raises:
    encoder.FingerprintMismatchError: If the Hessian does not fit the
      encoder (the differing field named).
  """
  config = with_hessian_layout(options.config, options.hessian_dir)
  encode = encode_lib.measured_options(
    dataclasses.replace(options.encode, encoder_config=config)
  )
  options = dataclasses.replace(options, encode=encode)
  fingerprint = encoder_lib.fingerprint_for_checkpoint(
    encode.checkpoint, encode.encoder_config
  )
  _, record = load_hessian(options, fingerprint)
  return options, fingerprint, record


def score(pipeline: beam.Pipeline, options: ScoreOptions, fingerprint, digest):
  """The job's stages: (query id, partial report record), the parsed
  corpus, and the shard outputs (top-k, REJECTED, SCORED)."""
  queries, query_rejected = queries_lib.read(
    options.queries, options.encode.checkpoint
  )
  if not queries:
    raise ValueError(f"no query of {options.queries} fits the model's max_len")
  searched = (
    pipeline
    | "Queries" >> beam.Create(queries)
    | "Batch"
    >> beam.BatchElements(
      min_batch_size=options.query_batch_size,
      max_batch_size=options.query_batch_size,
    )
    | "EncodeQueries"
    >> beam.ParDo(EncodeQueries(options, fingerprint, digest)).with_outputs(
      retrieve_lib.ENCODED, main="partial"
    )
  )
  raw = (
    pipeline
    | "Sources" >> beam.Create(data_lib.expand_sources(options.encode.corpus))
    | "Read" >> beam.ParDo(encode_lib.ReadSource())
  )
  parsed = raw | "Parse" >> beam.ParDo(
    encode_lib.Parse(options.encode.num_shards, [])
  ).with_outputs(encode_lib.Parse.REJECTED, main="examples")
  shards = (
    parsed.examples
    | "GroupByShard" >> beam.GroupByKey()
    | "EncodeAndScore"
    >> beam.ParDo(
      EncodeAndScoreShard(options, fingerprint, digest),
      beam.pvalue.AsList(searched[retrieve_lib.ENCODED]),
    ).with_outputs(REJECTED, SCORED, main="top_k")
  )
  ranked = {"partial": searched.partial, "sharded": shards.top_k} | (
    retrieve_lib.MergeSharded(k=options.k, methods=(options.method,))
  )
  return ranked, raw, parsed, shards, query_rejected


class Score(beam.PTransform):
  """The score job: a pipeline's start -> one element, score.json's content.

  Stages: those of `score` (Queries, Batch, EncodeQueries; Sources, Read,
  Parse, GroupByShard, EncodeAndScore; the merge), WriteReport, Rejected,
  CountRead, and Complete (rejected.jsonl, score.json and, last,
  COMPLETED).

  Checks its inputs (`prepare`) when applied, and then removes the marker
  of an earlier run from the output directory: a rerun rescores and
  rewrites it, and until it has, the directory is unfinished.

  Raises (when applied):
    encoder.FingerprintMismatchError: If the Hessian was fitted for another
      encoder (checkpoint, correction, projection, ...) than `options`'.
    index.HessianMismatchError: If the Hessian directory is inconsistent.
  """

  def __init__(self, options: ScoreOptions):
    super().__init__()
    self._options = options

  def expand(self, start):
    options, fingerprint, record = prepare(self._options)
    files.makedirs(options.output_dir)
    files.remove_marker(options.output_dir)
    ranked, raw, parsed, shards, query_rejected = score(
      start.pipeline, options, fingerprint, index_lib.digest_of(record)
    )
    summary = {
      "searched": ranked,
      "texts": corpus_texts(parsed.examples),
    } | retrieve_lib.WriteReport(options.output_dir, k=options.k)
    rejected = (
      parsed[encode_lib.Parse.REJECTED],
      shards[REJECTED],
    ) | "Rejected" >> beam.Flatten()
    num_read = raw | "CountRead" >> beam.combiners.Count.Globally()
    return (
      start
      | "Once" >> beam.Create([None])
      | "Complete"
      >> beam.ParDo(
        Complete(
          options, _recorded(options, fingerprint, record), query_rejected
        ),
        beam.pvalue.AsSingleton(summary),
        beam.pvalue.AsList(rejected),
        beam.pvalue.AsList(shards[SCORED]),
        beam.pvalue.AsSingleton(num_read),
      )
    )


def run_pipeline(pipeline: beam.Pipeline, *, options: ScoreOptions) -> dict:
  """Builds the job (`Score`), runs it; returns score.json's content.

  Raises:
    encoder.FingerprintMismatchError: If the Hessian was fitted for another
      encoder (checkpoint, correction, projection, ...) than `options`'.
    index.HessianMismatchError: If the Hessian directory is inconsistent or
      refitted while the job runs.
  """
  _ = pipeline | "Score" >> Score(options)
  pipeline.run().wait_until_finish()
  with files.open(os.path.join(options.output_dir, INFO)) as f:
    return json.load(f)
