r"""Runs one stage on a TPU VM, detached from ssh.

  python -m tpu_launch.run_stage --gin_file=v4_32.gin --name=NAME \
    --zone=ZONE --project=PROJECT --bucket=BUCKET --run_name=RUN \
    --stage=encode --stage_gin_file=experiments/demo.gin \
    --stage_gin_bindings="..." [--dry_run]

`encode` runs on every worker, as one JAX process per host: each starts
`.venv/bin/trak-jax-encode` with TRAK_JAX_DISTRIBUTED=1 (every process calls
jax.distributed.initialize() and they encode on one mesh over all hosts).
The other stages run on worker 0 alone. The stage runs under nohup, logging
to ~/logs/<stage>.log; outputs go to gs://BUCKET/RUN/<stage>. Follow the log
with `tpu_launch.logs`.
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
  """One ssh command that starts the stage (on all workers if multi-host).

  Raises:
    config.ConfigError: If the stage is not one of `commands.STAGES`.
  """
  config.require_choice(launch, "stage", tuple(commands.STAGES))
  vm = commands.TpuVm(launch.name, launch.zone, launch.project)
  args = commands.launch_stage_args(launch)
  multi_host = commands.STAGES[launch.stage].multi_host
  script = commands.stage_script(
    launch.stage, args, distributed=multi_host and launch.distributed
  )
  return [commands.ssh(vm, script, worker="all" if multi_host else "0")]


def main(argv=None) -> None:
  cli.main(argv, fields=FIELDS, required=REQUIRED, build=build, doc=__doc__)


if __name__ == "__main__":
  main()
