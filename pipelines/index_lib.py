"""Beam job: finish stored φ for a task and build a retrieval index.

    store shards -> R^(-1/2) (if the config has a Hessian) -> normalise (if
    configured) -> ScaNN or exact index, with Recall@10 against exact search

kind "exact": each store shard is finished and written as one index shard
by one worker (`WriteIndexShard`), then index.json records them, and a
COMPLETED marker is written last: no process holds more than one shard.
kind "scann" gathers every finished encoding into one process, which
ScaNN's builder needs.

DESIGN.md sections 1 and 4: preconditioning and normalisation happen here,
per task; one corpus pass serves many tasks. index.json records the digest
of the R^(-1/2) used, so retrieval refuses a Hessian refitted since.
"""

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import jax
import numpy as np
from apache_beam.metrics import Metrics

from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import hessian as hessian_core
from trak_jax import index as index_core
from trak_jax import store as store_lib

NAMESPACE = "trak_jax.index"


@dataclasses.dataclass(frozen=True)
class IndexOptions:
  """Inputs and outputs of the index job.

  Attributes:
    store_dir: A finished encoding store.
    hessian_dir: The fitted Hessian (needed when the config has one).
    output_dir: Receives the index.
    encoder_config: Says whether to precondition and normalise.
    kind: "scann" (one ScaNN index, built in one process), "exact" (a
      sharded exact index) or "scann_sharded" (a sharded exact index whose
      shards each have a ScaNN searcher, with its Recall@10 against exact
      search on that shard recorded in index.json).
    scann: ScaNN settings.
    recall_sample: Stored examples used as queries to measure ScaNN's
      Recall@10 against exact search.
    batch_size: Rows per finishing step.
    dtype: Dtype of a sharded exact index's finished encodings: "float32",
      "bfloat16", "int8" (per-row scale, `index.Int8Rows`), or None for
      the store's. Each shard in another dtype than float32 records the
      Recall@10 of exact search over its rows in that dtype against
      float32 (`index.recall_of_dtype`, up to `recall_sample` queries).
  """

  store_dir: str
  hessian_dir: str | None
  output_dir: str
  encoder_config: encoder_lib.EncoderConfig
  kind: str = "scann"
  scann: index_core.ScannSpec = index_core.ScannSpec()
  recall_sample: int = 200
  batch_size: int = 1024
  dtype: str | None = None

  def __post_init__(self):
    if self.dtype is not None:
      index_core.check_dtype(self.dtype)
    if self.kind not in KINDS:
      raise ValueError(f"kind={self.kind!r} is not one of {', '.join(KINDS)}")
    if self.dtype is not None and self.kind == "scann":
      raise ValueError(
        f"dtype={self.dtype!r} needs a sharded index (kind 'exact' or "
        f"'{index_core.SCANN_SHARDED}')"
      )


# IndexOptions.kind: one ScaNN index, sharded exact, or sharded exact with a
# ScaNN searcher per shard.
KINDS = ("scann", "exact", index_core.SCANN_SHARDED)
SHARDED_KINDS = ("exact", index_core.SCANN_SHARDED)


def index_dtype(options: IndexOptions, store) -> str:
  """The dtype a sharded exact index holds: the option's, or the store's."""
  return options.dtype or store.manifest["dtype"]


def load_preconditioner(options: IndexOptions, fingerprint):
  """`fitted_preconditioner` of the job's config and Hessian directory."""
  return fitted_preconditioner(
    encoder_config=options.encoder_config,
    hessian_dir=options.hessian_dir,
    fingerprint=fingerprint,
  )


def fitted_preconditioner(
  *,
  encoder_config: encoder_lib.EncoderConfig,
  hessian_dir: str | None,
  fingerprint: encoder_lib.Fingerprint,
):
  """R^(-1/2) for a config and the record of it an output keeps.

  Args:
    encoder_config: Says whether there is a Hessian.
    hessian_dir: The fitted Hessian (needed when the config has one).
    fingerprint: What the encodings it finishes mean.

  Returns:
    (preconditioner, record), both None when the config has no Hessian;
    the record is `index.hessian_record`'s, with the digest of R^(-1/2).

  Raises:
    ValueError: If the config has a Hessian and no directory is given.
    encoder.FingerprintMismatchError: If the Hessian was fitted on another
      encoder's features than `fingerprint` describes, or on queries
      corrected otherwise than `encoder_config` corrects them.
    index.HessianMismatchError: If its hessian.json records no digest, or
      not that of its R^(-1/2).
  """
  if encoder_config.hessian.kind == "none":
    return None, None
  if not hessian_dir:
    raise ValueError(
      f"hessian '{encoder_config.hessian.kind}' is configured; "
      "give the fitted Hessian's directory"
    )
  preconditioner, info = hessian_core.load(hessian_dir)
  fingerprint.check_matches(
    encoder_lib.Fingerprint.from_dict(info["fingerprint"]),
    what=f"hessian {hessian_dir}",
  )
  check_query_correction(encoder_config, info, hessian_dir=hessian_dir)
  record = index_core.hessian_record(
    preconditioner, info, hessian_dir=hessian_dir
  )
  return preconditioner, record


def check_query_correction(
  encoder_config: encoder_lib.EncoderConfig,
  hessian_info: dict,
  *,
  hessian_dir: str,
) -> None:
  """Raises encoder.FingerprintMismatchError if a Hessian's R_eval came from
  queries corrected otherwise than `encoder_config` corrects them (a
  hessian.json without the record: as the corpus)."""
  mine = encoder_lib.query_correction_json(encoder_config)
  theirs = hessian_info.get("query_correction")
  if mine != theirs:
    raise encoder_lib.FingerprintMismatchError(
      f"hessian {hessian_dir}: field 'query_correction' differs: "
      f"{mine!r} != {theirs!r} (None: queries corrected as the corpus)"
    )


def digest_of(record: dict | None) -> str | None:
  """The R^(-1/2) digest of a `fitted_preconditioner` record (None: none)."""
  return None if record is None else record["preconditioner_digest"]


def check_unchanged(
  record: dict | None, expected: str | None, *, hessian_dir, output: str
) -> None:
  """Raises index.HessianMismatchError if the Hessian a worker loaded
  (`record`) is not the one its job recorded (digest `expected`): it was
  refitted while `output` was being made."""
  digest = digest_of(record)
  if digest != expected:
    raise index_core.HessianMismatchError(
      f"the Hessian in {hessian_dir} was refitted while {output} was being "
      f"built (digest {expected}, now {digest}); rebuild it"
    )


def make_finisher(preconditioner, *, normalize: bool):
  """The jitted φ [batch, d] -> Ḡ [batch, d] of `encoder.finish`."""
  return jax.jit(
    lambda phi: encoder_lib.finish(phi, preconditioner, normalize=normalize)
  )


def finish_records(finisher, records) -> np.ndarray:
  """[n, d] float32 finished encodings of store records (their φ as
  stored, in the store's dtype)."""
  phi = np.stack([r.vector for r in records]).astype(np.float32)
  return np.asarray(finisher(phi))


class FinishShard(beam.DoFn):
  """Shard index -> (id, finished encoding) pairs.

  Args:
    options: The job's options.
    hessian_digest: Digest of the R^(-1/2) the job records (None without a
      Hessian); a worker that loads another (refitted meanwhile) fails.
  """

  def __init__(self, options: IndexOptions, hessian_digest: str | None):
    self._options = options
    self._hessian_digest = hessian_digest
    self._rows = Metrics.counter(NAMESPACE, "examples_indexed")
    self._shards = Metrics.counter(NAMESPACE, "index_shards_written")

  def setup(self):
    self._store = store_lib.EncodingStore(self._options.store_dir)
    preconditioner, record = load_preconditioner(
      self._options, self._store.fingerprint
    )
    check_unchanged(
      record,
      self._hessian_digest,
      hessian_dir=self._options.hessian_dir,
      output=f"index {self._options.output_dir}",
    )
    self._finish = make_finisher(
      preconditioner, normalize=self._options.encoder_config.normalize
    )

  def finished_batches(
    self, index: int
  ) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, [batch, d] float32 finished encodings) of one store shard."""
    records = self._store.shard_records(index)
    while chunk := list(itertools.islice(records, self._options.batch_size)):
      self._rows.inc(len(chunk))
      yield [r.id for r in chunk], finish_records(self._finish, chunk)

  def process(self, index: int) -> Iterator[tuple[str, np.ndarray]]:
    for ids, finished in self.finished_batches(index):
      yield from zip(ids, finished, strict=True)


class WriteIndexShard(FinishShard):
  """Store shard index -> index.json entry of the index shard written.

  The shard's finished encodings are kept in `index_dtype` (float32,
  bfloat16 or int8); one store shard, finished in float32, is all a worker
  holds. In another dtype than float32 the entry records
  `recall_at_10_vs_float32` (`index.recall_of_dtype`).
  """

  def process(self, index: int) -> Iterator[dict[str, Any]]:
    dtype = index_dtype(self._options, self._store)
    ids, blocks = [], [np.zeros((0, self._store.dim), np.float32)]
    for batch_ids, finished in self.finished_batches(index):
      ids.extend(batch_ids)
      blocks.append(finished)
    shard = index_core.in_id_order(ids, np.concatenate(blocks), dtype="float32")
    stored = index_core.in_dtype(shard.vectors, dtype)
    entry = index_core.write_shard(
      self._options.output_dir,
      index=index,
      num_shards=self._store.num_shards,
      ids=shard.ids,
      vectors=stored,
      dtype=dtype,
    )
    if dtype != "float32":
      entry["recall_at_10_vs_float32"] = index_core.recall_of_dtype(
        shard.vectors, stored, sample=self._options.recall_sample
      )
    if self._options.kind == index_core.SCANN_SHARDED:
      entry["scann"] = index_core.write_shard_searcher(
        self._options.output_dir,
        index=index,
        num_shards=self._store.num_shards,
        shard=index_core.IndexShard(shard.ids, stored),
        spec=self._options.scann,
        recall_sample=self._options.recall_sample,
      )
    self._shards.inc()
    yield {"index": index, **entry}


def _recorded(options: IndexOptions, store, hessian_record) -> dict:
  """What index.json records of the store, encoder and Hessian."""
  return {
    "store_dir": options.store_dir,
    "store_fingerprint": store.fingerprint.to_dict(),
    "encoder_config": options.encoder_config.to_dict(),
    "hessian_dir": options.hessian_dir,
    "hessian": hessian_record,
  }


def _build_and_save(pairs, *, options: IndexOptions, store, hessian_record):
  pairs = sorted(pairs, key=lambda p: p[0])
  ids = [p[0] for p in pairs]
  vectors = np.stack([p[1] for p in pairs]).astype(np.float32)
  index = index_core.Index.build(
    ids=ids,
    vectors=vectors,
    kind=options.kind,
    spec=options.scann,
    recall_rows=index_core.sample_rows(len(ids), options.recall_sample, seed=0),
    info=_recorded(options, store, hessian_record),
  )
  index.save(options.output_dir)
  return index.info


def _weighted(pairs: list[tuple[int, float]]) -> float:
  """The mean of (weight, value) pairs' values, by weight."""
  return sum(n * v for n, v in pairs) / sum(n for n, _ in pairs)


def write_sharded_info(
  entries, *, options: IndexOptions, store, hessian_record
) -> dict:
  """Writes a sharded index's index.json, once every shard is written.

  Raises:
    index.IndexShardError: If a store shard has no index shard.
  """
  entries = sorted(entries, key=lambda e: e["index"])
  if [e["index"] for e in entries] != list(range(store.num_shards)):
    raise index_core.IndexShardError(
      f"index {options.output_dir}: shards "
      f"{sorted(set(range(store.num_shards)) - {e['index'] for e in entries})}"
      " were not written"
    )
  info = {
    **_recorded(options, store, hessian_record),
    "kind": options.kind,
    "layout": index_core.SHARDED,
    "size": sum(e["count"] for e in entries),
    "scann": None,
    "dtype": index_dtype(options, store),
    "dim": store.dim,
    "shards": [{k: v for k, v in e.items() if k != "index"} for e in entries],
  }
  recalls = [
    (e["count"], e["recall_at_10_vs_float32"])
    for e in entries
    if e.get("recall_at_10_vs_float32") is not None
  ]
  if recalls:  # Shards weighted by their rows.
    info["recall_at_10_vs_float32"] = _weighted(recalls)
  searched = [
    (e["count"], e["scann"]["recall_at_10"]["recall"])
    for e in entries
    if e.get("scann")
  ]
  if searched:
    info["scann_recall_at_10"] = _weighted(searched)
  index_core.write_info(options.output_dir, info)
  return info


class BuildIndex(beam.PTransform):
  """The index job: a pipeline's start -> one element, the index.json info
  written.

  Stages: Shards (store shard numbers); for a sharded kind, Spread,
  FinishAndWrite (`WriteIndexShard`, one index shard per store shard),
  CollectShards and WriteInfo (`write_sharded_info`); for kind "scann",
  Finish (`FinishShard`), Collect and Build (one index, `Index.save`).
  index.json, then COMPLETED, are written last.

  Checks its inputs (the store, the Hessian and its fit to the encoder)
  when applied, and then removes the marker of an earlier run from the
  output directory: a rerun rebuilds and rewrites the whole index, and until
  it has, the directory is unfinished.
  """

  def __init__(self, options: IndexOptions):
    super().__init__()
    self._options = options

  def expand(self, start):
    store = store_lib.EncodingStore(self._options.store_dir)
    options = dataclasses.replace(
      self._options,
      encoder_config=encoder_lib.with_recorded_layout(
        self._options.encoder_config, store.manifest["encoder_config"]
      ),
    )
    _, record = load_preconditioner(options, store.fingerprint)
    digest = digest_of(record)
    files.makedirs(options.output_dir)
    files.remove_marker(options.output_dir)
    shards = start | "Shards" >> beam.Create(list(range(store.num_shards)))
    if options.kind in SHARDED_KINDS:
      return (
        shards
        | "Spread" >> beam.Reshuffle()
        | "FinishAndWrite" >> beam.ParDo(WriteIndexShard(options, digest))
        | "CollectShards" >> beam.combiners.ToList()
        | "WriteInfo"
        >> beam.Map(
          write_sharded_info,
          options=options,
          store=store,
          hessian_record=record,
        )
      )
    return (
      shards
      | "Finish" >> beam.ParDo(FinishShard(options, digest))
      | "Collect" >> beam.combiners.ToList()
      | "Build"
      >> beam.Map(
        _build_and_save, options=options, store=store, hessian_record=record
      )
    )


def run_pipeline(pipeline: beam.Pipeline, *, options: IndexOptions) -> dict:
  """Builds the job (`BuildIndex`), runs it; returns the index info (with
  Recall@10)."""
  _ = pipeline | "BuildIndex" >> BuildIndex(options)
  pipeline.run().wait_until_finish()
  return index_core.load_info(options.output_dir)
