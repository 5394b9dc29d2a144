"""What every job binary shares: pipeline options, gin and multi-host flags.

`--pipeline_options` is passed through to Beam unchanged ("--runner=
DataflowRunner --project=... --region=..."); without it the job runs on the
DirectRunner. A job's options come from gin: `gin/runs/<job>.gin` first (it
opens with what must be set and what is commonly overridden), then
`--gin_file`s and `--gin_bindings`; paths are the few flags left.
"""

import dataclasses
import os
import shlex

import apache_beam as beam
import gin
from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from trak_jax import distributed, gin_utils, train

# The training config of the binaries that train a model when none is given
# (parsed before the job's own file; a --gin_file may override it).
TRAINING_GIN_FILE = "experiments/demo.gin"

PIPELINE_OPTIONS = flags.DEFINE_string(
  "pipeline_options",
  "--runner=DirectRunner",
  "Beam pipeline options, passed through unchanged.",
)
GIN_FILES = flags.DEFINE_multi_string(
  "gin_file",
  [],
  "Gin files (paths, or relative to gin/), parsed after the job's own "
  "gin/runs/<job>.gin.",
)
GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings.")


def make_pipeline(options: str | None = None) -> beam.Pipeline:
  """A pipeline with the given (or flagged) options string."""
  text = PIPELINE_OPTIONS.value if options is None else options
  return beam.Pipeline(options=PipelineOptions(shlex.split(text)))


def job_gin_file(job: str) -> str:
  """The job's default config, relative to gin/."""
  return f"runs/{job}.gin"


def parse_gin(job: str, *, before=(), bindings=()) -> None:
  """Parses `before`, the job's gin file and --gin_file, then `bindings`
  and --gin_bindings (the flags win)."""
  gin_utils.parse(
    [*before, job_gin_file(job), *GIN_FILES.value],
    [*bindings, *GIN_BINDINGS.value],
  )


def training_bindings(corpus_path: str, model_dir: str) -> list[str]:
  """What a binary that trains binds: the corpus and the model directory."""
  return [
    f"train.train.corpus_path = {corpus_path!r}",
    f"train.train.output_dir = {model_dir!r}",
  ]


def train_from_gin(model_dir: str) -> train.TrainResult:
  """Trains (or resumes, or reuses) the model parsed gin configures into
  `model_dir`; records its config there."""
  result = gin.get_configurable(train.train)()
  gin_utils.write_operative_config(model_dir)
  return result


def define_compilation_cache_flag() -> flags.FlagHolder:
  """`--compilation_cache_dir`, for the jobs that compile the encoder."""
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return flags.DEFINE_string(
    "compilation_cache_dir",
    os.path.join(cache, "trak_jax", "jax_compilation_cache"),
    "JAX's persistent compilation cache (empty: none).",
  )


@dataclasses.dataclass(frozen=True)
class DistributedFlags:
  """`--distributed` and where the processes meet, for the jobs that can run
  as one JAX process per host."""

  distributed: flags.FlagHolder
  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder

  @classmethod
  def define(cls, what: str) -> "DistributedFlags":
    """Defines the flags; `what` completes "--distributed: <what> as one of
    several JAX processes"."""
    return cls(
      distributed=flags.DEFINE_bool(
        "distributed",
        None,
        f"{what} as one of several JAX processes (default: "
        "TRAK_JAX_DISTRIBUTED).",
      ),
      coordinator_address=flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0 (not on TPU VMs)."
      ),
      num_processes=flags.DEFINE_integer(
        "num_processes", None, "Processes in the job (not on TPU VMs)."
      ),
      process_id=flags.DEFINE_integer(
        "process_id", None, "This process's index (not on TPU VMs)."
      ),
    )

  def join(self) -> bool:
    """Joins the multi-process job when asked; whether this run is one."""
    if not distributed.requested(self.distributed.value):
      return False
    distributed.initialize(
      coordinator_address=self.coordinator_address.value,
      num_processes=self.num_processes.value,
      process_id=self.process_id.value,
    )
    return True
