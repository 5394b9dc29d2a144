"""What every job binary shares: pipeline options and gin.

`--pipeline_options` is passed through to Beam unchanged ("--runner=
DataflowRunner --project=... --region=..."); without it the job runs on the
DirectRunner.
"""

import shlex

import apache_beam as beam
from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from trak_jax import gin_utils

PIPELINE_OPTIONS = flags.DEFINE_string(
  "pipeline_options",
  "--runner=DirectRunner",
  "Beam pipeline options, passed through unchanged.",
)
GIN_FILES = flags.DEFINE_multi_string(
  "gin_file", [], "Gin files (paths, or relative to gin/)."
)
GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings.")


def make_pipeline(options: str | None = None) -> beam.Pipeline:
  """A pipeline with the given (or flagged) options string."""
  text = PIPELINE_OPTIONS.value if options is None else options
  return beam.Pipeline(options=PipelineOptions(shlex.split(text)))


def parse_gin(extra_bindings=()) -> None:
  gin_utils.parse(GIN_FILES.value, [*GIN_BINDINGS.value, *extra_bindings])
