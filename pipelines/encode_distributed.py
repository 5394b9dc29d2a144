"""The encode job as one SPMD program over several JAX processes.

For a model too large for one host, or a corpus too large for one: every
process (one per host) runs this same loop on a global mesh, so the
parameters stay sharded across all hosts' devices.

    every process: read the sources; keep the examples of its own output
                   shards (shard i belongs to process i mod P)
                -> per step, its rows of one global batch (batch_size / P
                   each; a process with nothing left feeds empty rows)
                -> the jitted encoder on the global batch; its rows back
                -> write each of its shards when the shard is complete
    barrier     -> process 0 alone writes manifest, rejected.jsonl and
                   COMPLETED (last)

Output shards are assigned by the same stable hash of the id as in the Beam
job, so a store written this way is the same store (same shards, same
bytes), every repeat of an id lands in one process and is rejected there,
and a rerun skips the shards that are done, whichever process wrote them.
Reading and parsing every source on every process costs little next to
encoding it.
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
from absl import logging
from tqdm import tqdm

from pipelines import encode_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import distributed, partitioning
from trak_jax import encoder as encoder_lib
from trak_jax import store as store_lib


@dataclasses.dataclass
class Counts:
  """What this process did (the Beam job's counters, per process)."""

  examples_read: int = 0
  examples_encoded: int = 0
  examples_rejected: int = 0
  tokens: int = 0
  shards_written: int = 0
  steps: int = 0


@dataclasses.dataclass
class _Input:
  """The sources as every process sees them, and this process's examples."""

  num_read: int
  parse_rejected: list[store_lib.Rejection]
  by_shard: dict[int, list[tuple[tuple[str, int], data_lib.CorpusExample]]]


def _read(corpus: str, num_shards: int, shards: set[int]) -> _Input:
  by_shard = {shard: [] for shard in sorted(shards)}
  rejected = []
  num_read = 0
  for source in data_lib.expand_sources(corpus):
    for location, raw in data_lib.raw_corpus_records(source):
      num_read += 1
      parsed = encode_lib.parse_record(location, raw, num_shards=num_shards)
      if isinstance(parsed, store_lib.Rejection):
        rejected.append(parsed)
      elif parsed[0] in by_shard:
        by_shard[parsed[0]].append(parsed[1])
  return _Input(num_read, rejected, by_shard)


@dataclasses.dataclass
class _Chunk:
  shard: int
  examples: list[encode_lib.Tokenized]
  batch: data_lib.Batch  # This process's rows, padded to max_len.
  rejected: list[store_lib.Rejection]  # The shard's, filled in as it goes.
  last: bool  # The shard's last chunk: write the shard after it.


def _chunks(
  inputs, *, tokenizer, rows, max_len, truncate, empty
) -> Iterator[_Chunk]:
  """This process's work, shard by shard, in batches of `rows` rows.

  Batches are padded to `max_len` (no length buckets): every process must
  run the same program at every step. An empty shard is one `empty` batch.
  """
  for shard, examples in inputs.by_shard.items():
    rejected: list[store_lib.Rejection] = []
    tokenized = encode_lib.tokenize_examples(
      tokenizer,
      encode_lib.unique(examples, rejected),
      max_len=max_len,
      truncate=truncate,
      rejected=rejected,
    )
    planned = list(
      encode_lib.make_batches(tokenized, batch_size=rows, max_len=max_len)
    )
    if not planned:  # An empty shard is still written.
      planned = [encode_lib.PlannedBatch((), empty)]
    for number, batch in enumerate(planned):
      yield _Chunk(
        shard,
        [tokenized[i] for i in batch.rows],
        batch.batch,
        rejected,
        last=number == len(planned) - 1,
      )


def run(options: encode_lib.EncodeOptions) -> dict[str, Any]:
  """Encodes `options.corpus` with every process of the job.

  Every process must call it with the same options; call
  `distributed.initialize()` first for more than one process.

  Returns:
    This process's counts, and on process 0 the manifest ("manifest").

  Raises:
    ValueError: If `batch_size` or the mesh's data axis does not split
      evenly over the processes.
  """
  opts = encode_lib.measured_options(options)
  process, processes = jax.process_index(), jax.process_count()
  if opts.batch_size % processes:
    raise ValueError(
      f"batch_size={opts.batch_size} does not split over {processes} "
      "processes; use a multiple of the process count"
    )
  encode_lib.enable_compilation_cache(opts.compilation_cache_dir)
  mesh = partitioning.make_mesh(data=opts.mesh_data, model=opts.mesh_model)
  if mesh.shape[partitioning.DATA_AXIS] % processes:
    raise ValueError(
      f"the mesh's data axis ({mesh.shape[partitioning.DATA_AXIS]}) must be "
      f"a multiple of the {processes} processes, so that each feeds its own "
      "rows; lower --mesh_model"
    )
  loaded = checkpoint_lib.load_checkpoint(opts.checkpoint, mesh=mesh)
  encoder = encoder_lib.from_checkpoint(loaded, opts.encoder_config)
  fingerprint = encoder.fingerprint
  max_len = opts.max_len or loaded.max_len

  def done(index):
    return store_lib.done_shard(
      opts.output_dir, index, opts.num_shards, fingerprint
    )

  mine = [s for s in distributed.owned(range(opts.num_shards)) if not done(s)]
  inputs = _read(opts.corpus, opts.num_shards, set(mine))
  counts = Counts(examples_read=inputs.num_read)
  if process == 0:  # Every process sees them; process 0 reports them.
    counts.examples_rejected = len(inputs.parse_rejected)
  num_examples = sum(len(v) for v in inputs.by_shard.values())
  logging.info(
    "process %d of %d: %d shards to write, %d examples",
    process,
    processes,
    len(mine),
    num_examples,
  )
  rows = opts.batch_size // processes
  # Empty rows: what a process with no work left feeds to stay in step.
  empty = data_lib.pad_batch([], seq_len=max_len, num_rows=rows)
  work = _chunks(
    inputs,
    tokenizer=loaded.tokenizer,
    rows=rows,
    max_len=max_len,
    truncate=opts.truncate,
    empty=empty,
  )
  records: list[store_lib.EncodedRecord] = []
  with tqdm(
    total=num_examples,
    desc=f"encode (process {process}/{processes})",
    unit="ex",
    position=process,
  ) as progress:
    while True:
      chunk = next(work, None)
      if not distributed.any_process(chunk is not None):
        break  # Every process is out of work.
      batch = empty if chunk is None else chunk.batch
      out = distributed.local_rows(
        mesh, encoder.features(distributed.global_rows(mesh, batch))
      )
      counts.steps += 1
      if chunk is None:
        continue
      for row, example in enumerate(chunk.examples):
        result = encode_lib.record_or_rejection(example.id, out, row)
        if isinstance(result, store_lib.Rejection):
          chunk.rejected.append(result)
        else:
          records.append(result)
      progress.update(len(chunk.examples))
      if chunk.last:
        info = store_lib.write_shard(
          opts.output_dir,
          index=chunk.shard,
          num_shards=opts.num_shards,
          records=records,
          rejected=chunk.rejected,
          fingerprint=fingerprint,
        )
        counts.examples_encoded += info.count
        counts.examples_rejected += len(info.rejected)
        counts.tokens += info.tokens
        counts.shards_written += 1
        records = []
  distributed.barrier("trak_jax.encode: shards written")
  result: dict[str, Any] = {
    "process": process,
    "mesh": {
      **{name: int(size) for name, size in mesh.shape.items()},
      "devices": mesh.devices.size,
      "processes": len({d.process_index for d in mesh.devices.flat}),
    },
    **dataclasses.asdict(counts),
  }
  if process == 0:
    result["manifest"] = store_lib.finalize(
      opts.output_dir,
      shards=[
        store_lib.read_shard_info(opts.output_dir, i, opts.num_shards)
        for i in range(opts.num_shards)
      ],
      parse_rejected=inputs.parse_rejected,
      fingerprint=fingerprint,
      encoder_config=opts.encoder_config.to_dict(),
      num_read=inputs.num_read,
      source=opts.corpus,
    )
  distributed.barrier("trak_jax.encode: store completed")
  return result
