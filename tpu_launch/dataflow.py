r"""Launches a Beam stage on Dataflow, Flink or Spark (or prints it).

  python -m tpu_launch.dataflow --stage=encode --project=PROJECT \
    --region=REGION --bucket=BUCKET --run_name=RUN \
    --stage_gin_file=experiments/demo.gin [--machine_type=...] \
    [--sdk_container_image=IMAGE | --setup_file=./setup.py] [--dry_run]

  python -m tpu_launch.dataflow --runner=FlinkRunner \
    --flink_master=HOST:8081 --environment_type=LOOPBACK ...
  python -m tpu_launch.dataflow --runner=SparkRunner \
    --spark_master_url=spark://HOST:7077 --environment_type=DOCKER ...

The command is `python -m pipelines.<stage>_main --pipeline_options="..."
--gin_file=... --output_dir=gs://BUCKET/RUN/<stage>`; the binary hands the
options string to Beam unchanged. On Dataflow, temp and staging files go to
gs://BUCKET/tmp and gs://BUCKET/staging.
"""

import re

from tpu_launch import cli, commands, config

FIELDS = (
  "stage",
  "runner",
  "project",
  "region",
  "bucket",
  "run_name",
  "job_name",
  "machine_type",
  "num_workers",
  "max_num_workers",
  "sdk_container_image",
  "setup_file",
  "requirements_file",
  "worker_accelerator",
  "flink_master",
  "spark_master_url",
  "environment_type",
  "environment_config",
  "stage_gin_file",
  "stage_gin_bindings",
  "stage_args",
)
REQUIRED = ("stage", "bucket", "run_name")
# The option naming each portable runner's cluster.
PORTABLE_MASTERS = {
  "FlinkRunner": "flink_master",
  "SparkRunner": "spark_master_url",
}
RUNNERS = ("DataflowRunner", *PORTABLE_MASTERS)
ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")
DEPENDENCY_FIELDS = ("sdk_container_image", "setup_file", "requirements_file")
DEFAULT_SETUP_FILE = "./setup.py"
SINGLE_SDK_PROCESS = "no_use_multiple_sdk_containers"
_JOB_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _given(launch: config.LaunchConfig, names) -> list[str]:
  """`--name=value` for each of `names` that is set."""
  values = ((name, getattr(launch, name)) for name in names)
  return [f"--{name}={value}" for name, value in values if value is not None]


def job_name(launch: config.LaunchConfig) -> str:
  """The given job name, or trak-jax-RUN-STAGE made Dataflow-safe.

  Raises:
    config.ConfigError: If a given name is not a valid Dataflow job name.
  """
  if launch.job_name is None:
    run = re.sub(r"[^a-z0-9]+", "-", launch.run_name.lower()).strip("-")
    return "-".join(filter(None, ["trak-jax", run, launch.stage]))
  if not _JOB_NAME.fullmatch(launch.job_name):
    raise config.ConfigError(
      f"field job_name {launch.job_name!r} must match {_JOB_NAME.pattern}"
    )
  return launch.job_name


def _dependencies(launch: config.LaunchConfig) -> list[str]:
  """How Dataflow workers get the project's dependencies."""
  options = _given(launch, DEPENDENCY_FIELDS)
  return options or [f"--setup_file={DEFAULT_SETUP_FILE}"]


def _accelerator(launch: config.LaunchConfig) -> list[str]:
  """Dataflow's worker accelerator option, if one is asked for.

  With an accelerator, each worker runs a single SDK process.

  Raises:
    config.ConfigError: If there is no container to hold jax[cuda|tpu].
  """
  if launch.worker_accelerator is None:
    return []
  if launch.sdk_container_image is None:
    raise config.ConfigError(
      "--worker_accelerator needs --sdk_container_image (a container with "
      "jax[cuda] or jax[tpu] and the project installed)"
    )
  service = f"worker_accelerator={launch.worker_accelerator}"
  # One SDK process per worker: a single JAX process owns the accelerator
  # (several would each try to claim it, or most of its memory).
  return [
    f"--dataflow_service_options={service}",
    f"--experiments={SINGLE_SDK_PROCESS}",
  ]


def dataflow_options(launch: config.LaunchConfig) -> list[str]:
  """Beam options for the DataflowRunner.

  Raises:
    config.ConfigError: If project or region is missing, or the job name
      or accelerator settings are invalid.
  """
  config.require(launch, ["project", "region", "bucket"])
  options = [
    "--runner=DataflowRunner",
    f"--project={launch.project}",
    f"--region={launch.region}",
    f"--temp_location={commands.gcs_path(launch.bucket, 'tmp')}",
    f"--staging_location={commands.gcs_path(launch.bucket, 'staging')}",
    f"--job_name={job_name(launch)}",
  ]
  options += _given(launch, ("machine_type", "num_workers", "max_num_workers"))
  return options + _dependencies(launch) + _accelerator(launch)


def portable_options(launch: config.LaunchConfig) -> list[str]:
  """Beam options for a portable runner (Flink or Spark).

  Raises:
    config.ConfigError: If the runner's master is missing, the environment
      type is unknown, or PROCESS/EXTERNAL lacks its environment_config.
  """
  master = PORTABLE_MASTERS[launch.runner]
  config.require(launch, [master])
  options = [f"--runner={launch.runner}", *_given(launch, [master])]
  if launch.environment_type is not None:
    config.require_choice(launch, "environment_type", ENVIRONMENT_TYPES)
    if launch.environment_type in ("PROCESS", "EXTERNAL"):
      config.require(launch, ["environment_config"])
  options += _given(launch, ("environment_type", "environment_config"))
  return options + _given(launch, DEPENDENCY_FIELDS)


def pipeline_options(launch: config.LaunchConfig) -> list[str]:
  """The runner's option set, as separate arguments."""
  config.require_choice(launch, "runner", RUNNERS)
  if launch.runner == "DataflowRunner":
    return dataflow_options(launch)
  return portable_options(launch)


def build(launch: config.LaunchConfig) -> list[cli.Command]:
  """The one command that runs the stage's Beam job."""
  config.require_choice(launch, "stage", commands.BEAM_STAGES)
  args = commands.launch_stage_args(launch)
  options = pipeline_options(launch)
  return [commands.pipeline_command(launch.stage, options, args)]


def main(argv=None) -> None:
  cli.main(argv, fields=FIELDS, required=REQUIRED, build=build, doc=__doc__)


if __name__ == "__main__":
  main()
