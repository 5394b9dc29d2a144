"""Golden dry runs of the launch scripts: exact commands, refusals, gin."""

import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from tpu_launch import (
  cli,
  commands,
  config,
  create,
  dataflow,
  delete,
  logs,
  run_stage,
  setup_workers,
)

VM = ["--name=tpu-a", "--zone=zone-a", "--project=proj-a"]
WHERE = "--zone=zone-a --project=proj-a"
SSH_ALL = f"gcloud compute tpus tpu-vm ssh tpu-a --worker=all {WHERE}"
SSH_0 = f"gcloud compute tpus tpu-vm ssh tpu-a --worker=0 {WHERE}"
STAGE_RUN = ["--bucket=bucket-a", "--run_name=run-a"]
BEAM = ["--project=proj-a", "--region=region-a", *STAGE_RUN]
REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = (create, setup_workers, run_stage, logs, delete, dataflow)


def dry_run(script, capsys, *args) -> list[str]:
  """The lines `script` prints for `args` with --dry_run."""
  script.main(["prog", *args, "--dry_run"])
  return capsys.readouterr().out.splitlines()


def refusal(script, capsys, *args) -> str:
  """What `script` says on stderr when it refuses `args` (exit code 2)."""
  with pytest.raises(SystemExit) as exit_info:
    script.main(["prog", *args, "--dry_run"])
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  return captured.err


# create / delete / logs.


def test_create_from_gin_file_and_flags(capsys):
  lines = dry_run(create, capsys, "--gin_file=v4_32.gin", *VM, "--spot")
  assert lines == [
    f"gcloud compute tpus tpu-vm create tpu-a {WHERE} "
    "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot"
  ]


def test_create_from_flags_only(capsys):
  lines = dry_run(
    create,
    capsys,
    *VM,
    "--accelerator_type=v5p-8",
    "--runtime_version=v2-alpha-tpuv5",
    "--preemptible",
  )
  assert lines == [
    f"gcloud compute tpus tpu-vm create tpu-a {WHERE} "
    "--accelerator-type=v5p-8 --version=v2-alpha-tpuv5 --preemptible"
  ]


def test_create_refuses_spot_and_preemptible(capsys):
  args = ["--gin_file=v4_32.gin", *VM, "--spot", "--preemptible"]
  assert "--spot and --preemptible" in refusal(create, capsys, *args)


def test_delete(capsys):
  assert dry_run(delete, capsys, *VM) == [
    f"gcloud compute tpus tpu-vm delete tpu-a {WHERE} --quiet"
  ]


def test_logs_follows_one_worker(capsys):
  lines = dry_run(logs, capsys, *VM, "--stage=encode", "--worker=3")
  assert lines == [
    f"gcloud compute tpus tpu-vm ssh tpu-a --worker=3 {WHERE} "
    "--command 'tail -f ~/logs/encode.log'"
  ]


def test_logs_defaults_to_worker_0(capsys):
  (line,) = dry_run(logs, capsys, *VM, "--stage=train")
  assert " --worker=0 " in line and line.endswith("~/logs/train.log'")


# setup_workers.

INSTALL = (
  f"{SSH_ALL} --command 'cd ~/trak_jax && "
  "(test -d .venv || python3.11 -m venv .venv) && "
  '.venv/bin/pip install -e ".[gcp]" "jax[tpu]"\''
)


def test_setup_workers_copies_project_directory(capsys):
  lines = dry_run(setup_workers, capsys, *VM, "--source=/src/repo")
  assert lines == [
    f"{SSH_ALL} --command 'mkdir -p ~/trak_jax'",
    "gcloud compute tpus tpu-vm scp --recurse /src/repo/setup.py "
    "/src/repo/pyproject.toml /src/repo/trak_jax /src/repo/pipelines "
    f"/src/repo/gin 'tpu-a:~/trak_jax' --worker=all {WHERE}",
    INSTALL,
  ]


def test_setup_workers_copies_sdist(capsys):
  sdist = "--source=dist/trak_jax-0.1.0.tar.gz"
  lines = dry_run(setup_workers, capsys, *VM, sdist)
  assert lines == [
    f"{SSH_ALL} --command 'mkdir -p ~/trak_jax'",
    "gcloud compute tpus tpu-vm scp --recurse dist/trak_jax-0.1.0.tar.gz "
    f"'tpu-a:~/trak_jax' --worker=all {WHERE}",
    f"{SSH_ALL} --command 'tar -xzf ~/trak_jax/trak_jax-0.1.0.tar.gz "
    "--strip-components=1 -C ~/trak_jax'",
    INSTALL,
  ]


def test_setup_workers_installs_from_bucket(capsys):
  args = ["--source=dist/trak_jax-0.1.0.tar.gz", "--from_bucket"]
  lines = dry_run(
    setup_workers,
    capsys,
    *VM,
    *args,
    "--bucket=bucket-a",
    "--python=python3.12",
    "--pip_packages=jax[tpu]",
    "--pip_packages=tensorboard",
  )
  assert lines == [
    "gcloud storage cp dist/trak_jax-0.1.0.tar.gz "
    "gs://bucket-a/dist/trak_jax-0.1.0.tar.gz",
    f"{SSH_ALL} --command 'mkdir -p ~/trak_jax && gcloud storage cp "
    "gs://bucket-a/dist/trak_jax-0.1.0.tar.gz "
    "~/trak_jax/trak_jax-0.1.0.tar.gz && "
    "tar -xzf ~/trak_jax/trak_jax-0.1.0.tar.gz --strip-components=1 "
    "-C ~/trak_jax'",
    f"{SSH_ALL} --command 'cd ~/trak_jax && "
    "(test -d .venv || python3.12 -m venv .venv) && "
    '.venv/bin/pip install -e ".[gcp]" "jax[tpu]" tensorboard\'',
  ]


def test_setup_workers_from_bucket_needs_bucket(capsys):
  args = [*VM, "--source=dist/trak_jax-0.1.0.tar.gz", "--from_bucket"]
  message = refusal(setup_workers, capsys, *args)
  assert "missing required field(s): bucket" in message


def test_setup_workers_from_bucket_needs_sdist(capsys):
  args = [*VM, "--from_bucket", "--bucket=bucket-a"]
  message = refusal(setup_workers, capsys, *args)
  assert "sdist" in message


# run_stage.


def test_run_stage_encode(capsys):
  lines = dry_run(
    run_stage,
    capsys,
    *VM,
    *STAGE_RUN,
    "--stage=encode",
    "--stage_gin_file=experiments/demo.gin",
    "--stage_gin_bindings=encoder.preset.name = 'grad_dot'",
    "--stage_args=--checkpoint=gs://bucket-a/run-a/train/checkpoints",
  )
  assert lines == [
    f"{SSH_ALL} --command 'mkdir -p ~/logs && cd ~/trak_jax && "
    "(TRAK_JAX_DISTRIBUTED=1 nohup .venv/bin/trak-jax-encode "
    "--gin_file=experiments/demo.gin "
    "\"--gin_bindings=encoder.preset.name = '\"'\"'grad_dot'\"'\"'\" "
    "--output_dir=gs://bucket-a/run-a/encode "
    "--checkpoint=gs://bucket-a/run-a/train/checkpoints "
    "> ~/logs/encode.log 2>&1 < /dev/null &)'"
  ]


def test_run_stage_encode_single_process(capsys):
  (line,) = dry_run(
    run_stage, capsys, *VM, *STAGE_RUN, "--stage=encode", "--nodistributed"
  )
  assert line.startswith(f"{SSH_ALL} --command")
  assert "(nohup .venv/bin/trak-jax-encode " in line
  assert "TRAK_JAX_DISTRIBUTED" not in line


def test_run_stage_train_gets_output_dir_as_gin_binding(capsys):
  lines = dry_run(
    run_stage,
    capsys,
    *VM,
    *STAGE_RUN,
    "--stage=train",
    "--stage_gin_file=experiments/demo.gin",
  )
  assert lines == [
    f"{SSH_0} --command 'mkdir -p ~/logs && cd ~/trak_jax && "
    "(nohup .venv/bin/trak-jax-train --gin_file=experiments/demo.gin "
    '"--gin_bindings=train.train.output_dir = '
    "'\"'\"'gs://bucket-a/run-a/train'\"'\"'\" "
    "> ~/logs/train.log 2>&1 < /dev/null &)'"
  ]


@pytest.mark.parametrize(
  "stage, script",
  [
    ("hessian", "trak-jax-hessian"),
    ("index", "trak-jax-index"),
    ("retrieve", "trak-jax-retrieve"),
    ("eval", "trak-jax-eval"),
  ],
)
def test_run_stage_maps_stage_to_console_script(capsys, stage, script):
  (line,) = dry_run(run_stage, capsys, *VM, *STAGE_RUN, f"--stage={stage}")
  # Single-host stages: worker 0 alone, no jax.distributed.
  assert line.startswith(f"{SSH_0} --command")
  assert f"(nohup .venv/bin/{script} " in line
  assert f"--output_dir=gs://bucket-a/run-a/{stage} " in line
  assert f"> ~/logs/{stage}.log 2>&1 < /dev/null &)'" in line


def test_run_stage_refuses_unknown_stage(capsys):
  message = refusal(run_stage, capsys, *VM, *STAGE_RUN, "--stage=serve")
  assert "field stage is 'serve'" in message


def test_remote_quoting_round_trips():
  args = ["a b", "it's", 'say "hi"', "$HOME", "x[y]", "plain", ""]
  assert shlex.split(commands.remote_join(args)) == args


# dataflow.

PIPELINE = "python -m pipelines.encode_main"
DATAFLOW_BASE = (
  "--runner=DataflowRunner --project=proj-a --region=region-a "
  "--temp_location=gs://bucket-a/tmp "
  "--staging_location=gs://bucket-a/staging"
)


def test_dataflow_with_setup_file(capsys):
  lines = dry_run(
    dataflow,
    capsys,
    *BEAM,
    "--stage=encode",
    "--machine_type=n2-standard-8",
    "--num_workers=2",
    "--max_num_workers=16",
    "--stage_gin_file=experiments/demo.gin",
  )
  assert lines == [
    f"{PIPELINE} '--pipeline_options={DATAFLOW_BASE} "
    "--job_name=trak-jax-run-a-encode --machine_type=n2-standard-8 "
    "--num_workers=2 --max_num_workers=16 --setup_file=./setup.py' "
    "--gin_file=experiments/demo.gin --output_dir=gs://bucket-a/run-a/encode"
  ]


def test_dataflow_gpu_workers_from_gin(capsys):
  lines = dry_run(
    dataflow,
    capsys,
    "--gin_file=dataflow_l4.gin",
    *BEAM,
    "--stage=encode",
    "--job_name=encode-l4",
    "--sdk_container_image=registry-a/trak-jax-cuda:1",
    "--requirements_file=requirements.txt",
  )
  assert lines == [
    f"{PIPELINE} '--pipeline_options={DATAFLOW_BASE} "
    "--job_name=encode-l4 --machine_type=g2-standard-8 --num_workers=1 "
    "--max_num_workers=8 --sdk_container_image=registry-a/trak-jax-cuda:1 "
    "--requirements_file=requirements.txt "
    "'\"'\"'--dataflow_service_options=worker_accelerator="
    "type:nvidia-l4;count:1;install-nvidia-driver'\"'\"' "
    "--experiments=no_use_multiple_sdk_containers' "
    "--output_dir=gs://bucket-a/run-a/encode"
  ]


def test_dataflow_options_pass_through_unchanged(capsys):
  (line,) = dry_run(
    dataflow,
    capsys,
    "--gin_file=dataflow_l4.gin",
    *BEAM,
    "--stage=index",
    "--sdk_container_image=registry-a/img:1",
  )
  argv = shlex.split(line)
  options = argv[3].removeprefix("--pipeline_options=")
  assert argv[:3] == ["python", "-m", "pipelines.index_main"]
  assert shlex.split(options)[-2:] == [
    "--dataflow_service_options=worker_accelerator="
    "type:nvidia-l4;count:1;install-nvidia-driver",
    "--experiments=no_use_multiple_sdk_containers",
  ]


@pytest.mark.parametrize(
  "args, missing",
  [
    (["--project=proj-a", *STAGE_RUN], "region"),
    (["--region=region-a", *STAGE_RUN], "project"),
    (["--project=proj-a", "--region=region-a", "--run_name=run-a"], "bucket"),
  ],
)
def test_dataflow_refuses_missing_field(capsys, args, missing):
  message = refusal(dataflow, capsys, *args, "--stage=encode")
  assert f"missing required field(s): {missing} " in message


def test_dataflow_accelerator_needs_container(capsys):
  args = ["--gin_file=dataflow_l4.gin", *BEAM, "--stage=encode"]
  assert "--sdk_container_image" in refusal(dataflow, capsys, *args)


def test_dataflow_refuses_bad_job_name(capsys):
  args = [*BEAM, "--stage=encode", "--job_name=Encode_1"]
  assert "field job_name 'Encode_1'" in refusal(dataflow, capsys, *args)


def test_dataflow_refuses_non_beam_stage(capsys):
  message = refusal(dataflow, capsys, *BEAM, "--stage=train")
  assert "field stage is 'train'; choose one of encode" in message


def test_flink_loopback_from_gin(capsys):
  lines = dry_run(
    dataflow,
    capsys,
    "--gin_file=flink_loopback.gin",
    *STAGE_RUN,
    "--stage=hessian",
    "--stage_gin_bindings=hessian.HessianSpec.mix = 0.9",
  )
  assert lines == [
    "python -m pipelines.hessian_main '--pipeline_options=--runner="
    "FlinkRunner --flink_master=localhost:8081 --environment_type=LOOPBACK' "
    "'--gin_bindings=hessian.HessianSpec.mix = 0.9' "
    "--output_dir=gs://bucket-a/run-a/hessian"
  ]


def test_flink_flags_override_gin(capsys):
  lines = dry_run(
    dataflow,
    capsys,
    "--gin_file=flink_loopback.gin",
    *STAGE_RUN,
    "--stage=retrieve",
    "--flink_master=flink-a:8081",
    "--environment_type=DOCKER",
    "--sdk_container_image=registry-a/img:1",
  )
  assert lines == [
    "python -m pipelines.retrieve_main '--pipeline_options=--runner="
    "FlinkRunner --flink_master=flink-a:8081 --environment_type=DOCKER "
    "--sdk_container_image=registry-a/img:1' "
    "--output_dir=gs://bucket-a/run-a/retrieve"
  ]


def test_spark_process_environment(capsys):
  lines = dry_run(
    dataflow,
    capsys,
    *STAGE_RUN,
    "--runner=SparkRunner",
    "--spark_master_url=spark://spark-a:7077",
    "--environment_type=PROCESS",
    '--environment_config={"command": "/opt/apache/beam/boot"}',
    "--stage=index",
  )
  assert lines == [
    "python -m pipelines.index_main '--pipeline_options=--runner="
    "SparkRunner --spark_master_url=spark://spark-a:7077 "
    "--environment_type=PROCESS "
    '\'"\'"\'--environment_config={"command": "/opt/apache/beam/boot"}'
    "'\"'\"'' --output_dir=gs://bucket-a/run-a/index"
  ]


@pytest.mark.parametrize(
  "args, message",
  [
    (["--runner=SparkRunner"], "missing required field(s): spark_master_url"),
    (["--runner=FlinkRunner"], "missing required field(s): flink_master"),
    (
      ["--runner=SparkRunner", "--spark_master_url=spark://s:7077"]
      + ["--environment_type=PROCESS"],
      "missing required field(s): environment_config",
    ),
    (
      ["--runner=FlinkRunner", "--flink_master=f:8081"]
      + ["--environment_type=K8S"],
      "field environment_type is 'K8S'",
    ),
    (["--runner=DirectRunner"], "field runner is 'DirectRunner'"),
  ],
)
def test_portable_runners_refuse_incomplete_config(capsys, args, message):
  assert message in refusal(
    dataflow, capsys, *STAGE_RUN, "--stage=index", *args
  )


# Required fields, gin and flags.


def test_missing_fields_exit_2_without_traceback():
  result = subprocess.run(
    [sys.executable, "-m", "tpu_launch.create", "--name=tpu-a", "--dry_run"],
    capture_output=True,
    text=True,
    check=False,
    cwd=REPO,
  )
  assert result.returncode == 2
  assert result.stdout == ""
  assert "Traceback" not in result.stderr
  assert result.stderr.startswith(
    "error: missing required field(s): "
    "zone, project, accelerator_type, runtime_version "
  )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.__name__)
def test_every_script_names_its_missing_fields(capsys, script):
  message = refusal(script, capsys)
  missing = [
    f for f in script.REQUIRED if getattr(config.LaunchConfig, f) is None
  ]
  assert f"missing required field(s): {', '.join(missing)} " in message


def test_unknown_flag_exits_2(capsys):
  assert "Unknown command line flag 'bucket'" in refusal(
    create, capsys, *VM, "--bucket=bucket-a"
  )


def test_gin_bindings_set_fields_and_flags_override_them(capsys):
  lines = dry_run(
    create,
    capsys,
    "--gin_file=v4_32.gin",
    "--gin_bindings=launch.name = 'tpu-gin'",
    "--gin_bindings=launch.zone = 'zone-gin'",
    "--gin_bindings=launch.project = 'proj-gin'",
    "--zone=zone-a",
    "--accelerator_type=v4-8",
  )
  assert lines == [
    "gcloud compute tpus tpu-vm create tpu-gin --zone=zone-a "
    "--project=proj-gin --accelerator-type=v4-8 "
    "--version=tpu-ubuntu2204-base"
  ]


def test_false_flag_overrides_true_gin(capsys):
  args = ["--gin_file=v4_32.gin", "--gin_bindings=launch.spot = True", *VM]
  assert dry_run(create, capsys, *args, "--nospot")[0].endswith(
    "ubuntu2204-base"
  )
  assert dry_run(create, capsys, *args)[0].endswith(" --spot")


@pytest.mark.parametrize(
  "binding, message",
  [
    ("launch.zones = 'z'", "unknown launch field(s) in gin: zones"),
    ("launch.num_workers = '4'", "field num_workers must be a int"),
    ("launch.zone = ", "bad gin config"),
  ],
)
def test_bad_gin_is_refused(capsys, binding, message):
  args = [*BEAM, "--stage=encode", f"--gin_bindings={binding}"]
  assert message in refusal(dataflow, capsys, *args)


def test_missing_gin_file_is_refused(capsys):
  args = ["--gin_file=v9_99.gin", *VM]
  assert "gin file 'v9_99.gin' not found" in refusal(create, capsys, *args)


# Nothing hard-coded.

PLACES = ("project", "zone", "region", "bucket")


def test_no_default_project_zone_region_or_bucket():
  defaults = {name: getattr(config.LaunchConfig, name) for name in PLACES}
  assert defaults == dict.fromkeys(PLACES)


@pytest.mark.parametrize(
  "gin_file",
  ["v4_32.gin", "v5p_8.gin", "dataflow_l4.gin", "flink_loopback.gin"],
)
def test_gin_configs_bind_no_place(gin_file):
  bound = config.read_gin([gin_file], [])
  assert bound and not set(bound) & set(PLACES)


SENTINELS = {
  "--project": "proj-s",
  "--zone": "zone-s",
  "--region": "region-s",
  "--bucket": "bucket-s",
  "--name": "tpu-s",
}
RUNS = {
  create: ["--gin_file=v4_32.gin"],
  setup_workers: ["--source=x.tar.gz", "--from_bucket"],
  run_stage: ["--stage=encode", "--run_name=r"],
  logs: ["--stage=encode"],
  delete: [],
  dataflow: ["--stage=encode", "--run_name=r"],
}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.__name__)
def test_commands_use_only_the_given_places(capsys, script):
  given = [
    f"{flag}={value}"
    for flag, value in SENTINELS.items()
    if flag[2:] in script.FIELDS
  ]
  text = "\n".join(dry_run(script, capsys, *RUNS[script], *given))
  for flag in ("--project", "--zone", "--region"):
    values = set(re.findall(rf"{flag}=([^\s']+)", text))
    assert values <= {SENTINELS[flag]}
  assert set(re.findall(r"gs://([^/\s']+)", text)) <= {"bucket-s"}
  assert "proj-s" in text or "project" not in script.FIELDS


# Running for real (with subprocess.run replaced).


def test_without_dry_run_commands_run_in_order(monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(
    cli.subprocess, "run", lambda cmd, check: calls.append((cmd, check))
  )
  setup_workers.main(["prog", *VM])
  assert capsys.readouterr().out == ""
  assert [check for _, check in calls] == [True, True, True]
  assert calls[0][0][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  assert calls[1][0][4:6] == ["scp", "--recurse"]
  assert calls[2][0][-1].startswith("cd ~/trak_jax && ")


def test_failed_command_stops_with_its_exit_code(monkeypatch, capsys):
  def fail(cmd, check):
    raise subprocess.CalledProcessError(7, cmd)

  monkeypatch.setattr(cli.subprocess, "run", fail)
  with pytest.raises(SystemExit) as exit_info:
    delete.main(["prog", *VM])
  assert exit_info.value.code == 7
  assert "exit code 7" in capsys.readouterr().err


def test_help_shows_docstring_and_flags(capsys):
  with pytest.raises(SystemExit) as exit_info:
    run_stage.main(["prog", "--help"])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("Runs one stage on a TPU VM")
  assert "--stage_gin_file" in out and "--dry_run" in out
