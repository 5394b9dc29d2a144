r"""Copies the project to every worker of a TPU VM and installs it.

  python -m tpu_launch.setup_workers --name=NAME --zone=ZONE \
    --project=PROJECT [--source=. | --source=dist/trak_jax-0.1.0.tar.gz \
    [--from_bucket --bucket=BUCKET]] [--dry_run]

The project lands in ~/trak_jax on each worker, either copied from a
project directory (only what the workers need: no .venv, no outputs) or
unpacked from a built sdist, sent directly or staged in gs://BUCKET/dist.
Then each worker makes ~/trak_jax/.venv if it is missing and installs the
project (editable, with the `gcp` extra) and `jax[tpu]` into it.
"""

import os

from tpu_launch import cli, commands, config

FIELDS = (
  "name",
  "zone",
  "project",
  "source",
  "from_bucket",
  "bucket",
  "python",
  "pip_packages",
)
REQUIRED = ("name", "zone", "project", "source")


def _copy_directory(vm: commands.TpuVm, source: str) -> list[cli.Command]:
  """Copies the project directory's entries into ~/trak_jax."""
  make_dir = commands.ssh(vm, f"mkdir -p {commands.REMOTE_DIR}")
  sources = commands.project_sources(source)
  return [make_dir, commands.scp(vm, sources, commands.REMOTE_DIR)]


def _copy_sdist(
  vm: commands.TpuVm, launch: config.LaunchConfig
) -> list[cli.Command]:
  """Gets the sdist to each worker and unpacks it into ~/trak_jax."""
  archive = os.path.basename(launch.source)
  remote_archive = f"{commands.REMOTE_DIR}/{commands.remote_quote(archive)}"
  unpack = commands.unpack_script(remote_archive)
  make_dir = f"mkdir -p {commands.REMOTE_DIR}"
  if not launch.from_bucket:
    send = commands.scp(vm, [launch.source], commands.REMOTE_DIR)
    return [commands.ssh(vm, make_dir), send, commands.ssh(vm, unpack)]
  staged = commands.gcs_path(launch.bucket, "dist", archive)
  # Not quoted whole: `~` must stay unquoted for the worker's shell.
  fetch = f"gcloud storage cp {commands.remote_quote(staged)} {remote_archive}"
  upload = commands.storage_copy(launch.source, staged)
  return [upload, commands.ssh(vm, f"{make_dir} && {fetch} && {unpack}")]


def build(launch: config.LaunchConfig) -> list[cli.Command]:
  """Copy (or stage and fetch), then install on all workers.

  Raises:
    config.ConfigError: If --from_bucket lacks a bucket or an sdist.
  """
  if launch.from_bucket:
    config.require(launch, ["bucket"])
    if not commands.is_sdist(launch.source):
      raise config.ConfigError(
        "--from_bucket needs --source to be a built sdist (.tar.gz)"
      )
  vm = commands.TpuVm(launch.name, launch.zone, launch.project)
  if commands.is_sdist(launch.source):
    copy = _copy_sdist(vm, launch)
  else:
    copy = _copy_directory(vm, launch.source)
  install = commands.install_script(
    python=launch.python, packages=launch.pip_packages
  )
  return [*copy, commands.ssh(vm, install)]


def main(argv=None) -> None:
  cli.main(argv, fields=FIELDS, required=REQUIRED, build=build, doc=__doc__)


if __name__ == "__main__":
  main()
