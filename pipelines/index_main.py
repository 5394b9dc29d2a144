r"""Builds a ScaNN (or exact) index from a store, for one task and method.

  trak-jax-index --store_dir=out/demo/stores/adafactor \
    --hessian_dir=out/demo/hessian/trackstar \
    --output_dir=out/demo/indexes/trackstar \
    [--gin_bindings="index_lib.IndexOptions.kind = 'exact'"]

Options from gin/runs/index.gin (the encoder: runs/encoder.gin, as the
store's), then --gin_file and --gin_bindings.
"""

import json

import gin
from absl import app, flags, logging

from pipelines import index_lib, launch
from trak_jax import gin_utils

_STORE = flags.DEFINE_string("store_dir", None, "Store.", required=True)
_HESSIAN = flags.DEFINE_string("hessian_dir", None, "Fitted Hessian.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output.", required=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  launch.parse_gin("index")
  options = gin.get_configurable(index_lib.IndexOptions)(
    store_dir=_STORE.value,
    hessian_dir=_HESSIAN.value,
    output_dir=_OUTPUT_DIR.value,
  )
  info = index_lib.run_pipeline(launch.make_pipeline(), options=options)
  gin_utils.write_operative_config(options.output_dir)
  print(json.dumps(info.get("recall_at_10"), indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
