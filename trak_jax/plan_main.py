r"""Prints what an attribution run will cost.

  trak-jax-plan --corpus_tokens=160e9 --params=8e9 --d=65536 \
    --accelerator=tpu-v5p --chips=256
"""

import json

from absl import app, flags

from trak_jax import plan

_TOKENS = flags.DEFINE_float(
  "corpus_tokens", None, "Corpus tokens.", required=True
)
_PARAMS = flags.DEFINE_float("params", None, "Model parameters.", required=True)
_DIM = flags.DEFINE_integer("d", 65536, "Projection dimension.")
_EXAMPLES = flags.DEFINE_float("num_examples", None, "Corpus examples.")
_ACCELERATOR = flags.DEFINE_enum(
  "accelerator", "tpu-v4", sorted(plan.ACCELERATORS), "Accelerator."
)
_CHIPS = flags.DEFINE_integer("chips", 1, "Chips encoding in parallel.")
_BLOCKS = flags.DEFINE_integer("hessian_blocks", 1, "Diagonal blocks of R.")
_MEASURED = flags.DEFINE_float(
  "measured_tokens_per_second", None, "Calibrate: measured encode tokens/s."
)
_MEASURED_PARAMS = flags.DEFINE_float(
  "measured_params", None, "Calibrate: params of that measurement."
)
_QUERIES = flags.DEFINE_float("num_queries", 1000, "Queries retrieved.")
_SHARD = flags.DEFINE_float(
  "shard_examples", None, "Encodings per index shard (default: fits memory)."
)
_WORKER_GIB = flags.DEFINE_float(
  "worker_memory_gib", 16, "Memory of a retrieval worker."
)
_EFFICIENCY = flags.DEFINE_float(
  "retrieval_efficiency",
  plan.RETRIEVAL_EFFICIENCY,
  "Share of the chip's rate exact scoring reaches (bench/retrieval.py; "
  f"the whole CPU search: {plan.CPU_RETRIEVAL_EFFICIENCY}, "
  "bench/retrieval_scale.py).",
)
_INDEX_DTYPE = flags.DEFINE_enum(
  "index_dtype",
  "bfloat16",
  sorted(plan.INDEX_DTYPE_BYTES),
  "Dtype of the sharded index retrieval reads.",
)
_READ = flags.DEFINE_float(
  "read_bytes_per_second",
  plan.READ_BYTES_PER_SECOND,
  "How fast a retrieval worker reads the index (assumed).",
)


def main(argv):
  del argv
  result = plan.plan(
    corpus_tokens=_TOKENS.value,
    params=_PARAMS.value,
    dim=_DIM.value,
    num_examples=_EXAMPLES.value,
    accelerator=_ACCELERATOR.value,
    chips=_CHIPS.value,
    hessian_blocks=_BLOCKS.value,
    measured_tokens_per_second=_MEASURED.value,
    measured_params=_MEASURED_PARAMS.value,
    num_queries=_QUERIES.value,
    shard_examples=_SHARD.value,
    retrieval_efficiency=_EFFICIENCY.value,
    index_dtype=_INDEX_DTYPE.value,
    read_bytes_per_second=_READ.value,
    worker_memory_bytes=_WORKER_GIB.value * 2**30,
  )
  values = result.to_dict()
  values["store_gib"] = result.store_bytes / 2**30
  values["index_gib"] = result.index_bytes / 2**30
  values["hessian_gib"] = result.hessian_bytes / 2**30
  values["retrieve_index_gib"] = result.retrieve_index_bytes / 2**30
  values["retrieve_worker_gib"] = result.retrieve_worker_bytes / 2**30
  print(json.dumps(values, indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
