"""Cost planning: what an attribution run will take, before it runs.

Per-example gradients cost about one forward and backward pass, as a
training step does (the factored path skips the weight gradients and adds
the projection; `bench/encode_throughput.py` measures encoding at 1.0-1.07x
the training step's tokens/s). So encoding a corpus costs about

    FLOPs ≈ 6 · params · corpus_tokens

and takes FLOPs / (achieved FLOP/s). The achieved rate of an accelerator is
its peak rate times a model FLOP utilisation (MFU); the one row measured on
this project's machine is `cpu-2core`. Calibrate any row with a measured
tokens/s at a known parameter count (`measured_tokens_per_second`).

Storage: a store holds one [d] vector per example (plus id, loss and token
count); an index holds the finished vectors twice (ours for exact search,
ScaNN's for re-ordering) and ScaNN's asymmetric-hashing codes (4 bits per
`dims_per_block` dims); R needs d² (full) float64 numbers. On the demo store
(2,943 examples, d = 4096) the store estimate is within 0.3% and the index
estimate within 4% of the written sizes.

Retrieval (sharded exact search, `pipelines/retrieve_lib.py`) reads every
finished encoding once and scores every query against it, 2 · queries ·
examples · d FLOPs at a share `retrieval_efficiency` of the chip's rate;
its time is the larger of that and reading the index at
`read_bytes_per_second` per worker. Where the rates come from:
`RETRIEVAL_EFFICIENCY` is what `bench/retrieval.py` measured for
`scoring.top_k` (the scoring each shard runs) against a plain jitted matmul
of the same shapes, 0.61. `bench/retrieval_scale.py` measures the whole
shard-by-shard search (reading and checking each shard, scoring, merging in
Python) on this 2-core machine: 46.4 GFLOP/s at 1M encodings of d = 1024,
0.34 of its plain matmul rate and 0.95 of the `cpu-2core` row's rate
(`CPU_RETRIEVAL_EFFICIENCY`; with it the planner gives that run's 22.7
queries/s back). `READ_BYTES_PER_SECOND` is assumed (a worker streaming
from GCS or a local SSD), not measured. A worker holds one
index shard (sized to half of `worker_memory_bytes` unless given; int8 rows
add a float32 scale), the query encodings in float32 and, per key chunk of
`scoring.top_k`, the chunk in float32 and a [queries, chunk] score block;
one worker per chip, at most one per shard.
"""

import dataclasses
import math
from typing import Any

# Peak dense bf16 FLOP/s per chip (vendor figures) and an assumed MFU.
ACCELERATORS: dict[str, dict[str, float]] = {
  # Measured here: 7,727 tokens/s at 1.05M params (bench/encode_throughput).
  "cpu-2core": {"peak_flops": 48.7e9, "mfu": 1.0},
  "tpu-v4": {"peak_flops": 275e12, "mfu": 0.4},
  "tpu-v5e": {"peak_flops": 197e12, "mfu": 0.4},
  "tpu-v5p": {"peak_flops": 459e12, "mfu": 0.4},
  "a100": {"peak_flops": 312e12, "mfu": 0.35},
  "h100": {"peak_flops": 989e12, "mfu": 0.35},
}
RECORD_OVERHEAD_BYTES = 48  # tf.train.Example framing, loss, token count.
RETRIEVAL_EFFICIENCY = 0.6  # bench/retrieval.py: top_k at 0.61 of a matmul.
CPU_RETRIEVAL_EFFICIENCY = 0.95  # bench/retrieval_scale.py, over cpu-2core.
READ_BYTES_PER_SECOND = 500e6  # Assumed: one worker reading GCS or an SSD.
INDEX_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}
INT8_SCALE_BYTES = 4  # An int8 index row's float32 scale.


@dataclasses.dataclass(frozen=True)
class Plan:
  """Expected cost of encoding a corpus and serving it."""

  encode_flops: float  # 6 · params · corpus_tokens
  encode_hours: float  # on `chips` chips of the accelerator
  store_bytes: float  # the encoding store
  index_bytes: float  # finished vectors + ScaNN codes
  hessian_bytes: float  # R in float64 (full, or its blocks)
  retrieve_index_bytes: float  # the sharded index retrieval reads
  retrieve_flops: float  # 2 · queries · examples · d
  retrieve_hours: float  # on `retrieve_workers` workers
  retrieve_worker_bytes: float  # one index shard, the queries, a score block
  retrieve_workers: int  # one per index shard, at most `chips`
  accelerator: str
  chips: int

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def achieved_flops(
  accelerator: str,
  *,
  measured_tokens_per_second: float | None = None,
  measured_params: float | None = None,
) -> float:
  """FLOP/s one chip achieves: measured if given, else peak times MFU.

  Raises:
    ValueError: For an unknown accelerator, or half a measurement.
  """
  if measured_tokens_per_second is not None:
    if not measured_params:
      raise ValueError("a measured tokens/s needs the params it was run at")
    return 6.0 * measured_params * measured_tokens_per_second
  if accelerator not in ACCELERATORS:
    raise ValueError(
      f"unknown accelerator {accelerator!r}; known: {sorted(ACCELERATORS)}"
    )
  row = ACCELERATORS[accelerator]
  return row["peak_flops"] * row["mfu"]


def retrieval_row_bytes(dim: int, *, index_dtype: str) -> int:
  """Bytes of one finished encoding in a sharded index (without its id).

  Raises:
    ValueError: For an unknown dtype.
  """
  if index_dtype not in INDEX_DTYPE_BYTES:
    raise ValueError(
      f"index dtype {index_dtype!r} is not one of "
      f"{', '.join(INDEX_DTYPE_BYTES)}"
    )
  scale = INT8_SCALE_BYTES if index_dtype == "int8" else 0
  return dim * INDEX_DTYPE_BYTES[index_dtype] + scale


def plan(
  *,
  corpus_tokens: float,
  params: float,
  dim: int,
  num_examples: float | None = None,
  tokens_per_example: float = 512,
  accelerator: str = "tpu-v4",
  chips: int = 1,
  dtype_bytes: int = 4,
  id_bytes: int = 16,
  dims_per_block: int = 2,
  hessian_blocks: int = 1,
  measured_tokens_per_second: float | None = None,
  measured_params: float | None = None,
  num_queries: float = 1000,
  shard_examples: float | None = None,
  index_dtype: str = "bfloat16",
  retrieval_efficiency: float = RETRIEVAL_EFFICIENCY,
  score_chunk: int = 8192,
  worker_memory_bytes: float = 16 * 2**30,
  read_bytes_per_second: float = READ_BYTES_PER_SECOND,
) -> Plan:
  """The expected cost of encoding `corpus_tokens` tokens with the encoder.

  Args:
    corpus_tokens: Tokens in the corpus.
    params: Model parameters.
    dim: Projection dimension d.
    num_examples: Corpus examples (default: tokens / tokens_per_example).
    tokens_per_example: Used when `num_examples` is not given.
    accelerator: A row of `ACCELERATORS`.
    chips: Chips encoding in parallel.
    dtype_bytes: Bytes per stored number (4: float32, 2: bfloat16).
    id_bytes: Bytes of an example id.
    dims_per_block: ScaNN's asymmetric-hashing block size.
    hessian_blocks: 1 for a full R; else R's number of equal diagonal blocks.
    measured_tokens_per_second: Calibrate with a measured encode rate...
    measured_params: ...taken at this many parameters.
    num_queries: Queries retrieved.
    shard_examples: Encodings per index shard (default: what fills half of
      `worker_memory_bytes`).
    index_dtype: The sharded index's dtype: "float32", "bfloat16" or
      "int8" (one byte a number and a float32 scale a row).
    retrieval_efficiency: Share of the chip's rate exact scoring reaches.
    score_chunk: Keys scored at once (`scoring.top_k`'s chunk).
    worker_memory_bytes: A retrieval worker's memory.
    read_bytes_per_second: How fast a worker reads the index.

  Returns:
    The plan.
  """
  examples = num_examples or corpus_tokens / tokens_per_example
  flops = 6.0 * params * corpus_tokens
  rate = achieved_flops(
    accelerator,
    measured_tokens_per_second=measured_tokens_per_second,
    measured_params=measured_params,
  )
  block = dim / hessian_blocks
  row_bytes = retrieval_row_bytes(dim, index_dtype=index_dtype) + id_bytes
  if shard_examples is None:
    shard_examples = max(1.0, math.floor(worker_memory_bytes / 2 / row_bytes))
  shards = max(1, math.ceil(examples / shard_examples))
  workers = min(shards, chips)
  retrieve_flops = 2.0 * num_queries * examples * dim
  retrieve_seconds = max(
    retrieve_flops / (rate * retrieval_efficiency),
    examples * row_bytes / read_bytes_per_second,
  )
  return Plan(
    encode_flops=flops,
    encode_hours=flops / (rate * chips) / 3600,
    store_bytes=examples
    * (dim * dtype_bytes + id_bytes + RECORD_OVERHEAD_BYTES),
    # vectors.npy, ScaNN's own float copy for re-ordering, and its codes.
    index_bytes=examples * (2 * dim * 4 + dim / dims_per_block / 2 + id_bytes),
    hessian_bytes=hessian_blocks * block * block * 8,
    retrieve_index_bytes=examples * row_bytes,
    retrieve_flops=retrieve_flops,
    retrieve_hours=retrieve_seconds / workers / 3600,
    retrieve_worker_bytes=min(shard_examples, examples) * row_bytes
    + num_queries * dim * 4
    + min(score_chunk, examples) * (dim + num_queries) * 4,
    retrieve_workers=workers,
    accelerator=accelerator,
    chips=chips,
  )
