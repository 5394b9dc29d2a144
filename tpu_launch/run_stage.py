r"""Runs one stage on every worker of a TPU VM, detached from ssh.

  python -m tpu_launch.run_stage --gin_file=v4_32.gin --name=NAME \
    --zone=ZONE --project=PROJECT --bucket=BUCKET --run_name=RUN \
    --stage=encode --stage_gin_file=experiments/demo.gin \
    --stage_gin_bindings="..." [--dry_run]

Each worker starts `.venv/bin/trak-jax-<stage>` with
TRAK_JAX_DISTRIBUTED=1 (every process calls jax.distributed.initialize())
under nohup, logging to ~/logs/<stage>.log; outputs go to
gs://BUCKET/RUN/<stage>. Follow the log with `tpu_launch.logs`.
"""

from tpu_launch import cli, commands, config

FIELDS = (
  "name",
  "zone",
  "project",
  "bucket",
  "run_name",
  "stage",
  "stage_gin_file",
  "stage_gin_bindings",
  "stage_args",
  "distributed",
)
REQUIRED = FIELDS[:6]


def build(launch: config.LaunchConfig) -> list[cli.Command]:
  """One ssh command that starts the stage on all workers.

  Raises:
    config.ConfigError: If the stage is not one of `commands.STAGES`.
  """
  config.require_choice(launch, "stage", tuple(commands.STAGES))
  vm = commands.TpuVm(launch.name, launch.zone, launch.project)
  args = commands.launch_stage_args(launch)
  script = commands.stage_script(
    launch.stage, args, distributed=launch.distributed
  )
  return [commands.ssh(vm, script)]


def main(argv=None) -> None:
  cli.main(argv, fields=FIELDS, required=REQUIRED, build=build, doc=__doc__)


if __name__ == "__main__":
  main()
