r"""Fits the task-specific Hessian R from a store and a query set.

  trak-jax-hessian --store_dir=out/demo/stores/adafactor \
    --queries=out/demo/data/queries.jsonl --checkpoint=out/demo/model \
    --output_dir=out/demo/hessian/trackstar

Options from gin/runs/hessian.gin (the encoder: runs/encoder.gin, as the
store's), then --gin_file and --gin_bindings.
"""

import json

import gin
from absl import app, flags, logging

from pipelines import hessian_lib, launch
from trak_jax import gin_utils

_STORE = flags.DEFINE_string("store_dir", None, "Store.", required=True)
_QUERIES = flags.DEFINE_string("queries", None, "Query JSONL (for R_eval).")
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Checkpoint.", required=True
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output.", required=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  launch.parse_gin("hessian")
  options = gin.get_configurable(hessian_lib.HessianOptions)(
    store_dir=_STORE.value,
    queries=_QUERIES.value,
    checkpoint=_CHECKPOINT.value,
    output_dir=_OUTPUT_DIR.value,
  )
  info = hessian_lib.run_pipeline(launch.make_pipeline(), options=options)
  gin_utils.write_operative_config(options.output_dir)
  print(json.dumps(info, indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
