"""The launch configuration: one set of fields, from gin and from flags.

Every field can be set in a gin file or binding as `launch.<field>` and on
the command line as `--<field>`; a flag given on the command line overrides
gin, and gin overrides the defaults below. Nothing that names where things
run or are stored (project, zone, region, bucket) has a default: scripts
refuse to run until it is set.
"""

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gin

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
GIN_NAME = "launch"


class ConfigError(ValueError):
  """A launch configuration that cannot be run, with the reason."""


def _field(help_text: str, *, kind: type = str, default: Any = None):
  """A `LaunchConfig` field with its flag help and flag kind."""
  return dataclasses.field(
    default=default, metadata={"help": help_text, "kind": kind}
  )


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
  """Where and how to launch; each script reads the fields it needs."""

  # TPU VM.
  name: str | None = _field("TPU VM name.")
  zone: str | None = _field("Zone of the TPU VM.")
  project: str | None = _field("Google Cloud project.")
  accelerator_type: str | None = _field("TPU type, e.g. v4-32.")
  runtime_version: str | None = _field("TPU VM software version.")
  spot: bool = _field("Create a Spot TPU VM.", kind=bool, default=False)
  preemptible: bool = _field(
    "Create a preemptible TPU VM.", kind=bool, default=False
  )
  worker: str = _field("Worker whose log to show (0, 1, ...).", default="0")
  # Worker set-up.
  source: str = _field(
    "Project directory, or a built sdist (.tar.gz) to copy.", default="."
  )
  from_bucket: bool = _field(
    "Stage the sdist in gs://BUCKET/dist and install it from there.",
    kind=bool,
    default=False,
  )
  python: str = _field(
    "Python the workers' virtualenv is made with.", default="python3.11"
  )
  pip_packages: tuple[str, ...] = _field(
    "Packages installed beside the project.", kind=list, default=("jax[tpu]",)
  )
  # Outputs.
  bucket: str | None = _field("GCS bucket (name, without gs://).")
  run_name: str | None = _field("Outputs go to gs://BUCKET/RUN_NAME/STAGE.")
  # The stage and its own configuration.
  stage: str | None = _field("Stage to run.")
  stage_gin_file: tuple[str, ...] = _field(
    "Gin files passed to the stage.", kind=list, default=()
  )
  stage_gin_bindings: tuple[str, ...] = _field(
    "Gin bindings passed to the stage.", kind=list, default=()
  )
  stage_args: tuple[str, ...] = _field(
    "Further arguments passed to the stage unchanged.", kind=list, default=()
  )
  distributed: bool = _field(
    "Encode as one JAX process per host (jax.distributed.initialize()).",
    kind=bool,
    default=True,
  )
  # Beam runners.
  runner: str = _field(
    "DataflowRunner, FlinkRunner or SparkRunner.", default="DataflowRunner"
  )
  region: str | None = _field("Dataflow region.")
  machine_type: str | None = _field("Dataflow worker machine type.")
  num_workers: int | None = _field("Initial Dataflow workers.", kind=int)
  max_num_workers: int | None = _field("Autoscaling limit.", kind=int)
  sdk_container_image: str | None = _field("Worker container image.")
  setup_file: str | None = _field(
    "setup.py staged to workers (default ./setup.py without an image)."
  )
  requirements_file: str | None = _field("requirements.txt for workers.")
  job_name: str | None = _field("Job name (default trak-jax-RUN-STAGE).")
  worker_accelerator: str | None = _field(
    "Dataflow accelerator, e.g. type:nvidia-l4;count:1;install-nvidia-driver."
  )
  flink_master: str | None = _field("Flink master, host:port.")
  spark_master_url: str | None = _field("Spark master, spark://host:port.")
  environment_type: str | None = _field(
    "Portable SDK harness: DOCKER, PROCESS, EXTERNAL or LOOPBACK."
  )
  environment_config: str | None = _field(
    "Image (DOCKER), command JSON (PROCESS) or address (EXTERNAL)."
  )


FIELDS = {f.name: f for f in dataclasses.fields(LaunchConfig)}


@gin.configurable(GIN_NAME, module="tpu_launch")
def _gin_values(**values) -> dict[str, Any]:
  """Whatever the parsed gin config binds as `launch.<field>`."""
  return values


def _resolve_gin_file(path: str) -> str:
  """A gin file as given, or under `tpu_launch/configs/`."""
  if os.path.exists(path):
    return path
  candidate = os.path.join(CONFIG_DIR, path)
  if os.path.exists(candidate):
    return candidate
  raise ConfigError(f"gin file {path!r} not found (also looked in configs/)")


def read_gin(
  gin_files: Sequence[str], gin_bindings: Sequence[str]
) -> dict[str, Any]:
  """Parses gin files and bindings; returns the `launch.*` values.

  The global gin config is cleared before and after, so no state is left.

  Raises:
    ConfigError: If a file is missing, does not parse, or binds a field
      `LaunchConfig` does not have.
  """
  paths = [_resolve_gin_file(path) for path in gin_files]
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(paths, list(gin_bindings))
    values = _gin_values()
  except (ValueError, SyntaxError) as error:
    raise ConfigError(f"bad gin config: {error}") from error
  finally:
    gin.clear_config()
  unknown = sorted(set(values) - set(FIELDS))
  if unknown:
    raise ConfigError(f"unknown launch field(s) in gin: {', '.join(unknown)}")
  return values


def _check_kind(name: str, value: Any) -> Any:
  """`value` as `name`'s kind; lists become tuples."""
  kind = FIELDS[name].metadata["kind"]
  if value is None:
    return None
  if kind is list and isinstance(value, list | tuple):
    return tuple(str(item) for item in value)
  if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
    return value
  raise ConfigError(f"field {name} must be a {kind.__name__}, got {value!r}")


def merge(
  gin_values: Mapping[str, Any], flag_values: Mapping[str, Any]
) -> LaunchConfig:
  """Defaults, overridden by gin, overridden by flags that were given.

  Args:
    gin_values: Values bound in gin.
    flag_values: Flag values; `None` means the flag was not given.
  """
  values = dict(gin_values)
  values.update({k: v for k, v in flag_values.items() if v is not None})
  checked = {name: _check_kind(name, value) for name, value in values.items()}
  return LaunchConfig(**checked)


def require(config: LaunchConfig, names: Iterable[str]) -> None:
  """Refuses a config that leaves any of `names` unset.

  Raises:
    ConfigError: Naming every missing field.
  """
  missing = [name for name in names if getattr(config, name) in (None, "")]
  if missing:
    flags = ", ".join(f"--{name}" for name in missing)
    raise ConfigError(
      f"missing required field(s): {', '.join(missing)} "
      f"(set {flags} or bind launch.<field> in a --gin_file)"
    )


def require_choice(
  config: LaunchConfig, name: str, choices: Sequence[str]
) -> None:
  """Refuses a field whose value is not one of `choices`.

  Raises:
    ConfigError: Naming the field, its value and the choices.
  """
  value = getattr(config, name)
  if value not in choices:
    raise ConfigError(
      f"field {name} is {value!r}; choose one of {', '.join(choices)}"
    )
