r"""Follows a stage's log on one worker of a TPU VM.

  python -m tpu_launch.logs --name=NAME --zone=ZONE --project=PROJECT \
    --stage=encode [--worker=0] [--dry_run]
"""

from tpu_launch import cli, commands, config

FIELDS = ("name", "zone", "project", "stage", "worker")
REQUIRED = ("name", "zone", "project", "stage")


def build(launch: config.LaunchConfig) -> list[cli.Command]:
  """An ssh command that tails `~/logs/<stage>.log`."""
  config.require_choice(launch, "stage", tuple(commands.STAGES))
  vm = commands.TpuVm(launch.name, launch.zone, launch.project)
  script = commands.tail_script(launch.stage)
  return [commands.ssh(vm, script, worker=launch.worker)]


def main(argv=None) -> None:
  cli.main(argv, fields=FIELDS, required=REQUIRED, build=build, doc=__doc__)


if __name__ == "__main__":
  main()
