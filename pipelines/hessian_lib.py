"""Beam job: fit the task-specific Hessian R from a store and a query set.

    store shards -> seeded sample of φ -> Σ φφᵀ (float64)  = R_train
    queries      -> encoder φ           -> Σ φφᵀ (float64)  = R_eval
    (too long)   -> rejected.jsonl
    -> λ (given or by the k-th-eigenvalue rule) -> R^(-1/2) -> hessian dir

DESIGN.md section 1, "R". The sample is seeded per example id, so the same
store and seed always give the same R. The queries' φ is as the config
encodes queries (its `query_correction`: uncorrected for
`trackstar_one_sided`), while R_train is the store's corrected φ;
hessian.json then records the query correction.
"""

import dataclasses
import hashlib
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines import queries as queries_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import hessian as hessian_core
from trak_jax import store as store_lib

NAMESPACE = "trak_jax.hessian"


@dataclasses.dataclass(frozen=True)
class HessianOptions:
  """Inputs and outputs of the Hessian job.

  Attributes:
    store_dir: A finished encoding store.
    queries: Query JSONL (for R_eval); unused by hessian kind "train".
    checkpoint: The checkpoint the store was encoded with.
    output_dir: Receives hessian.npz, hessian.json and COMPLETED.
    encoder_config: The encoder config; its `hessian` spec is fitted.
    batch_size: Queries per encoder call.
  """

  store_dir: str
  queries: str | None
  checkpoint: str
  output_dir: str
  encoder_config: encoder_lib.EncoderConfig
  batch_size: int = 32


def in_sample(example_id: str, *, rate: float, seed: int) -> bool:
  """A seeded, per-id coin flip with probability `rate`."""
  digest = hashlib.sha1(f"{seed}:{example_id}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < rate


class AutocorrelationFn(beam.CombineFn):
  """Combines [d] vectors into a float64 `Autocorrelation`."""

  def __init__(self, block_sizes):
    self._block_sizes = tuple(block_sizes)

  def create_accumulator(self):
    return hessian_core.Autocorrelation(self._block_sizes), []

  def add_input(self, accumulator, vector):
    stats, pending = accumulator
    pending.append(np.asarray(vector, np.float64))
    if len(pending) >= 256:
      stats.update(np.stack(pending))
      pending.clear()
    return stats, pending

  def merge_accumulators(self, accumulators):
    merged = hessian_core.Autocorrelation(self._block_sizes)
    for stats, pending in accumulators:
      if pending:
        stats.update(np.stack(pending))
      merged = merged.merge(stats)
    return merged, []

  def extract_output(self, accumulator):
    stats, pending = accumulator
    if pending:
      stats.update(np.stack(pending))
    return stats


class ReadSampledShard(beam.DoFn):
  """Shard index -> φ of the sampled examples."""

  def __init__(self, store_dir: str, *, rate: float, seed: int):
    self._store_dir, self._rate, self._seed = store_dir, rate, seed
    self._sampled = Metrics.counter(NAMESPACE, "train_examples")

  def setup(self):
    self._store = store_lib.EncodingStore(self._store_dir)

  def process(self, index: int) -> Iterator[np.ndarray]:
    for record in self._store.shard_records(index):
      if in_sample(record.id, rate=self._rate, seed=self._seed):
        self._sampled.inc()
        yield record.vector


class EncodeQueryFeatures(beam.DoFn):
  """A batch of queries -> their φ rows (not preconditioned), with the
  config's query correction (`encoder.encode_queries`)."""

  def __init__(self, options: HessianOptions):
    self._options = options
    self._encoded = Metrics.counter(NAMESPACE, "eval_examples")

  def setup(self):
    from trak_jax import checkpoint as checkpoint_lib

    loaded = checkpoint_lib.load_checkpoint(self._options.checkpoint)
    self._encoder = encoder_lib.from_checkpoint(
      loaded, self._options.encoder_config
    )
    self._tokenizer = loaded.tokenizer
    self._max_len = loaded.max_len

  def process(self, queries) -> Iterator[np.ndarray]:
    out = encoder_lib.encode_queries(
      self._encoder,
      self._tokenizer,
      list(queries),
      batch_size=self._options.batch_size,
      max_len=self._max_len,
      finished=False,
    )
    for row, finite in zip(out.features, out.finite, strict=True):
      if finite:
        self._encoded.inc()
        yield row


def block_sizes_for(
  options: HessianOptions, store, *, train_examples: int
) -> list[int]:
  """R's diagonal blocks: one, or the projection layout's, each small enough
  for `train_examples` (see `hessian.block_sizes`)."""
  from trak_jax import checkpoint as checkpoint_lib

  header = checkpoint_lib.read_header(options.checkpoint)
  layout = encoder_lib.model_layout(
    header.model_config, options.encoder_config.projection
  )
  return hessian_core.block_sizes(
    store.dim,
    [b.size for b in layout.blocks],
    options.encoder_config.hessian,
    train_examples=train_examples,
  )


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the job fits, checked before anything runs (`plan`).

  Attributes:
    options: The options, with the store's recorded projection layout.
    fingerprint: The store's (and so the Hessian's) fingerprint.
    num_shards: Store shards.
    rate: The chance each stored example is in the R_train sample.
    block_sizes: R's diagonal blocks.
  """

  options: HessianOptions
  fingerprint: encoder_lib.Fingerprint
  num_shards: int
  rate: float
  block_sizes: tuple[int, ...]


def plan(options: HessianOptions) -> Plan:
  """The job's `Plan`.

  Raises:
    encoder.FingerprintMismatchError: If the store was made with another
      encoder than `options` describes.
    store.StoreError: If the store is unfinished.
    ValueError: If hessian "mixed" is configured and no query file given.
  """
  spec = options.encoder_config.hessian
  store = store_lib.EncodingStore(options.store_dir)
  options = dataclasses.replace(
    options,
    encoder_config=encoder_lib.with_recorded_layout(
      options.encoder_config, store.manifest["encoder_config"]
    ),
  )
  expected = encoder_lib.fingerprint_for_checkpoint(
    options.checkpoint, options.encoder_config
  )
  expected.check_matches(store.fingerprint, what=f"store {options.store_dir}")
  if spec.kind == "mixed" and not options.queries:
    raise ValueError("hessian 'mixed' needs a query file for R_eval")
  sample = min(spec.train_sample_size(store.dim), len(store))
  return Plan(
    options=options,
    fingerprint=expected,
    num_shards=store.num_shards,
    rate=min(1.0, sample / max(len(store), 1)),
    block_sizes=tuple(block_sizes_for(options, store, train_examples=sample)),
  )


class FitHessian(beam.PTransform):
  """The Hessian job: a pipeline's start -> one element, the info written
  to `hessian.json` (`hessian.save`).

  Stages: Shards, Sample and RTrain (the seeded sample of the store and its
  autocorrelation); for hessian "mixed", Queries, Batch, EncodeQueries and
  REval (a query too long for the model goes to rejected.jsonl, named by
  its id, before the run); then Fit (λ, R^(-1/2)) and Write (hessian.npz,
  hessian.json and, last, COMPLETED).

  Checks its inputs (`plan`) when applied, and then removes the marker of
  an earlier run from the output directory: a rerun refits and rewrites
  the whole directory, and until it has, the directory is unfinished.
  """

  def __init__(self, options: HessianOptions):
    super().__init__()
    self._options = options

  def expand(self, start):
    job = plan(self._options)
    options, spec = job.options, job.options.encoder_config.hessian
    files.makedirs(options.output_dir)
    files.remove_marker(options.output_dir)
    train = (
      start
      | "Shards" >> beam.Create(list(range(job.num_shards)))
      | "Sample"
      >> beam.ParDo(
        ReadSampledShard(options.store_dir, rate=job.rate, seed=spec.seed)
      )
      | "RTrain" >> beam.CombineGlobally(AutocorrelationFn(job.block_sizes))
    )
    extra = []
    if spec.kind == "mixed":
      queries, rejected = queries_lib.read(options.queries, options.checkpoint)
      queries_lib.write_rejected(options.output_dir, rejected)
      if not queries:
        raise ValueError(
          f"no query of {options.queries} fits the model's max_len "
          f"({len(rejected)} rejected, see {options.output_dir}/rejected.jsonl)"
        )
      extra.append(
        beam.pvalue.AsSingleton(
          start
          | "Queries" >> beam.Create(queries)
          | "Batch"
          >> beam.BatchElements(
            min_batch_size=options.batch_size,
            max_batch_size=options.batch_size,
          )
          | "EncodeQueries" >> beam.ParDo(EncodeQueryFeatures(options))
          | "REval" >> beam.CombineGlobally(AutocorrelationFn(job.block_sizes))
        )
      )

    def fit(train_stats, eval_stats=None):
      fitted = hessian_core.fit(spec, train_stats, eval_stats)
      return fitted, train_stats, eval_stats

    def write(fitted):
      fitted, train_stats, eval_stats = fitted
      return hessian_core.save(
        options.output_dir,
        fitted,
        train_stats=train_stats,
        eval_stats=eval_stats,
        spec=spec,
        fingerprint=job.fingerprint.to_dict(),
        query_correction=encoder_lib.query_correction_json(
          options.encoder_config
        ),
      )

    return train | "Fit" >> beam.Map(fit, *extra) | "Write" >> beam.Map(write)


def run_pipeline(pipeline: beam.Pipeline, *, options: HessianOptions) -> dict:
  """Builds the job (`FitHessian`), runs it; returns the written
  `hessian.json` info.

  Raises:
    encoder.FingerprintMismatchError: If the store was made with another
      encoder than `options` describes.
  """
  _ = pipeline | "FitHessian" >> FitHessian(options)
  pipeline.run().wait_until_finish()
  _, info = hessian_core.load(options.output_dir)
  return info
