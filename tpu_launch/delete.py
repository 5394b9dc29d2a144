r"""Deletes a TPU VM (without asking).

  python -m tpu_launch.delete --name=NAME --zone=ZONE --project=PROJECT \
    [--dry_run]
"""

from tpu_launch import cli, commands, config

FIELDS = ("name", "zone", "project")
REQUIRED = FIELDS


def build(launch: config.LaunchConfig) -> list[cli.Command]:
  """The delete command."""
  vm = commands.TpuVm(launch.name, launch.zone, launch.project)
  return [commands.delete(vm)]


def main(argv=None) -> None:
  cli.main(argv, fields=FIELDS, required=REQUIRED, build=build, doc=__doc__)


if __name__ == "__main__":
  main()
