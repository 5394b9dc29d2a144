r"""Builds a ScaNN (or exact) index from a store, for one task and method.

  trak-jax-index --store_dir=out/demo/stores/adafactor \
    --hessian_dir=out/demo/hessian/trackstar \
    --output_dir=out/demo/indexes/trackstar --gin_file=runs/encoder.gin
"""

import json

import gin
from absl import app, flags, logging

from pipelines import index_lib, launch
from trak_jax import encoder, gin_utils, index

_STORE = flags.DEFINE_string("store_dir", None, "Store.", required=True)
_HESSIAN = flags.DEFINE_string("hessian_dir", None, "Fitted Hessian.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output.", required=True)
_KIND = flags.DEFINE_enum(
  "kind",
  "scann",
  list(index_lib.KINDS),
  "Index kind: scann (one index), exact (sharded), scann_sharded (sharded, "
  "a ScaNN searcher per shard).",
)
_DTYPE = flags.DEFINE_enum(
  "dtype",
  None,
  ["float32", "bfloat16", "int8"],
  "Dtype of a sharded exact index (default: the store's); int8 keeps a "
  "per-row scale.",
)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  launch.parse_gin()
  options = index_lib.IndexOptions(
    store_dir=_STORE.value,
    hessian_dir=_HESSIAN.value,
    output_dir=_OUTPUT_DIR.value,
    encoder_config=gin.get_configurable(encoder.preset)(),
    kind=_KIND.value,
    scann=gin.get_configurable(index.ScannSpec)(),
    dtype=_DTYPE.value,
  )
  info = index_lib.run_pipeline(launch.make_pipeline(), options=options)
  gin_utils.write_operative_config(options.output_dir)
  print(json.dumps(info.get("recall_at_10"), indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
