"""Command lines for TPU VMs and Beam jobs, as argument lists.

Pure functions: nothing here runs a command or reads a flag. Commands that
run on the workers are shell scripts (one string) passed to
`gcloud compute tpus tpu-vm ssh --command`; their own arguments are quoted
with `shlex` so that gin bindings with spaces or quotes survive the trip.
"""

import dataclasses
import os
import re
import shlex
from collections.abc import Sequence

TPU_VM = ("gcloud", "compute", "tpus", "tpu-vm")
REMOTE_DIR = "~/trak_jax"  # The project and its .venv on every worker.
LOG_DIR = "~/logs"
DISTRIBUTED_ENV = "TRAK_JAX_DISTRIBUTED"  # =1: jax.distributed.initialize().
# What a worker needs from a project directory (no .venv, no outputs).
PROJECT_ENTRIES = ("setup.py", "pyproject.toml", "trak_jax", "pipelines", "gin")
_SPECIAL_IN_DOUBLE_QUOTES = re.compile(r'[$`"\\!]')


@dataclasses.dataclass(frozen=True)
class TpuVm:
  """A TPU VM and where it lives."""

  name: str
  zone: str
  project: str

  def location(self) -> list[str]:
    return [f"--zone={self.zone}", f"--project={self.project}"]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage: its console script, Beam module and output argument."""

  script: str  # Console script installed by setup.py.
  beam_module: str | None  # `python -m` module of a Beam job, if it is one.
  output_binding: str | None = None  # Gin parameter taking the output dir.
  # Runs as one JAX process per host (`--distributed`); other stages run on
  # worker 0 alone, with that host's chips.
  multi_host: bool = False


STAGES = {
  "train": Stage("trak-jax-train", None, "train.train.output_dir"),
  "encode": Stage("trak-jax-encode", "pipelines.encode_main", multi_host=True),
  "hessian": Stage("trak-jax-hessian", "pipelines.hessian_main"),
  "index": Stage("trak-jax-index", "pipelines.index_main"),
  "retrieve": Stage("trak-jax-retrieve", "pipelines.retrieve_main"),
  "eval": Stage("trak-jax-eval", None),
}
BEAM_STAGES = tuple(name for name, s in STAGES.items() if s.beam_module)


def gcs_path(bucket: str, *parts: str) -> str:
  """`gs://bucket/part/...`."""
  return "/".join([f"gs://{bucket}", *parts])


def is_sdist(source: str) -> bool:
  """Whether `source` names a built sdist rather than a directory."""
  return source.endswith(".tar.gz")


# gcloud.


def create(
  vm: TpuVm,
  *,
  accelerator_type: str,
  runtime_version: str,
  spot: bool = False,
  preemptible: bool = False,
) -> list[str]:
  """`gcloud ... tpu-vm create`."""
  command = [*TPU_VM, "create", vm.name, *vm.location()]
  command += [
    f"--accelerator-type={accelerator_type}",
    f"--version={runtime_version}",
  ]
  return command + ["--spot"] * spot + ["--preemptible"] * preemptible


def delete(vm: TpuVm) -> list[str]:
  """`gcloud ... tpu-vm delete`, without a prompt."""
  return [*TPU_VM, "delete", vm.name, *vm.location(), "--quiet"]


def ssh(vm: TpuVm, script: str, *, worker: str = "all") -> list[str]:
  """Runs shell `script` on `worker` (`all`, or an index)."""
  where = [f"--worker={worker}", *vm.location()]
  return [*TPU_VM, "ssh", vm.name, *where, "--command", script]


def scp(
  vm: TpuVm, sources: Sequence[str], dest: str, *, worker: str = "all"
) -> list[str]:
  """Copies local `sources` (recursively) to `dest` on `worker`."""
  target = f"{vm.name}:{dest}"
  where = [f"--worker={worker}", *vm.location()]
  return [*TPU_VM, "scp", "--recurse", *sources, target, *where]


def storage_copy(source: str, dest: str) -> list[str]:
  """`gcloud storage cp`, local to GCS or back."""
  return ["gcloud", "storage", "cp", source, dest]


# Shell scripts run on the workers.


def remote_quote(arg: str) -> str:
  """Quotes `arg` for the worker's shell, preferring double quotes.

  The script is quoted once more (single quotes) for the local shell, so
  double quotes inside it keep the printed command readable.
  """
  quoted = shlex.quote(arg)
  if quoted == arg or _SPECIAL_IN_DOUBLE_QUOTES.search(arg):
    return quoted
  return f'"{arg}"'


def remote_join(args: Sequence[str]) -> str:
  """`shlex.join` for the worker's shell, with `remote_quote`."""
  return " ".join(remote_quote(arg) for arg in args)


def project_sources(source_dir: str) -> list[str]:
  """The entries of a project directory that workers need."""
  return [os.path.join(source_dir, entry) for entry in PROJECT_ENTRIES]


def unpack_script(archive: str) -> str:
  """Unpacks an sdist (a path on the worker) into `REMOTE_DIR`."""
  return f"tar -xzf {archive} --strip-components=1 -C {REMOTE_DIR}"


def install_script(*, python: str, packages: Sequence[str]) -> str:
  """Makes `REMOTE_DIR/.venv` if missing and installs the project into it.

  The install is editable, so `gin/` beside the package stays where the
  binaries look for it.
  """
  make_venv = f"(test -d .venv || {remote_quote(python)} -m venv .venv)"
  install = remote_join([".venv/bin/pip", "install", "-e", ".[gcp]", *packages])
  return f"cd {REMOTE_DIR} && {make_venv} && {install}"


def stage_args(
  stage: str,
  *,
  gin_files: Sequence[str],
  gin_bindings: Sequence[str],
  output_dir: str,
  extra: Sequence[str] = (),
) -> list[str]:
  """A stage's arguments; the output directory comes after the user's
  bindings so it is the one that holds."""
  args = [f"--gin_file={path}" for path in gin_files]
  args += [f"--gin_bindings={binding}" for binding in gin_bindings]
  binding = STAGES[stage].output_binding
  if binding:
    args.append(f"--gin_bindings={binding} = {output_dir!r}")
  else:
    args.append(f"--output_dir={output_dir}")
  return args + list(extra)


def launch_stage_args(launch) -> list[str]:
  """`stage_args` of a launch config, writing to gs://BUCKET/RUN/STAGE."""
  return stage_args(
    launch.stage,
    gin_files=launch.stage_gin_file,
    gin_bindings=launch.stage_gin_bindings,
    output_dir=gcs_path(launch.bucket, launch.run_name, launch.stage),
    extra=launch.stage_args,
  )


def stage_script(stage: str, args: Sequence[str], *, distributed: bool) -> str:
  """Starts `stage` detached (nohup, output to `LOG_DIR/<stage>.log`), so
  it outlives the ssh session; the script itself returns at once."""
  env = [f"{DISTRIBUTED_ENV}=1"] if distributed else []
  binary = f".venv/bin/{STAGES[stage].script}"
  run = remote_join([*env, "nohup", binary, *args])
  log = log_path(stage)
  return (
    f"mkdir -p {LOG_DIR} && cd {REMOTE_DIR} && "
    f"({run} > {log} 2>&1 < /dev/null &)"
  )


def log_path(stage: str) -> str:
  """Where a stage's output goes on each worker."""
  return f"{LOG_DIR}/{stage}.log"


def tail_script(stage: str) -> str:
  """Follows a stage's log."""
  return f"tail -f {log_path(stage)}"


# Beam.


def pipeline_command(
  stage: str, pipeline_options: Sequence[str], args: Sequence[str]
) -> list[str]:
  """`python -m pipelines.<stage>_main --pipeline_options=... ARGS`.

  The options become one shell-quoted string that the binary passes to
  Beam unchanged.
  """
  options = f"--pipeline_options={shlex.join(pipeline_options)}"
  return ["python", "-m", STAGES[stage].beam_module, options, *args]
