"""The encode job gives the same store on two worker processes."""

import json

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import encode_lib
from trak_jax import encoder as encoder_lib
from trak_jax import projection as projection_lib
from trak_jax import store as store_lib

CONFIG = encoder_lib.preset(
  "trackstar", projection=projection_lib.ProjectionSpec(dim=128)
)


def encode(tiny_run, output_dir, args):
  encode_lib.run_pipeline(
    beam.Pipeline(options=PipelineOptions(args)),
    options=encode_lib.EncodeOptions(
      corpus=tiny_run["corpus"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(output_dir),
      encoder_config=CONFIG,
      num_shards=3,
      batch_size=16,
    ),
  )
  return store_lib.EncodingStore(str(output_dir))


def test_two_worker_processes_write_the_same_store(tiny_run, tmp_path):
  single = encode(tiny_run, tmp_path / "in_process", [])
  multi = encode(
    tiny_run,
    tmp_path / "two_workers",
    ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
  )
  a, b = single.load(), multi.load()
  assert a.ids == b.ids and len(set(a.ids)) == len(a.ids)
  np.testing.assert_array_equal(a.vectors, b.vectors)
  shards = lambda s: [
    (x["file"], x["count"], x["sha256"]) for x in s.manifest["shards"]
  ]
  assert shards(single) == shards(multi)  # Byte-identical shard files.
  counts = lambda s: json.dumps(s.manifest["counts"], sort_keys=True)
  assert counts(single) == counts(multi)
