r"""Creates a TPU VM.

  python -m tpu_launch.create --gin_file=v4_32.gin --name=NAME \
    --zone=ZONE --project=PROJECT [--spot | --preemptible] [--dry_run]
"""

from tpu_launch import cli, commands, config

FIELDS = (
  "name",
  "zone",
  "project",
  "accelerator_type",
  "runtime_version",
  "spot",
  "preemptible",
)
REQUIRED = FIELDS[:5]


def build(launch: config.LaunchConfig) -> list[cli.Command]:
  """The create command.

  Raises:
    config.ConfigError: If both --spot and --preemptible are set.
  """
  if launch.spot and launch.preemptible:
    raise config.ConfigError("choose one of --spot and --preemptible")
  vm = commands.TpuVm(launch.name, launch.zone, launch.project)
  return [
    commands.create(
      vm,
      accelerator_type=launch.accelerator_type,
      runtime_version=launch.runtime_version,
      spot=launch.spot,
      preemptible=launch.preemptible,
    )
  ]


def main(argv=None) -> None:
  cli.main(argv, fields=FIELDS, required=REQUIRED, build=build, doc=__doc__)


if __name__ == "__main__":
  main()
