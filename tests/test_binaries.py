"""Every binary starts: its flags parse and its imports do not clash."""

import subprocess
import sys

BINARIES = (
  "pipelines.demo_main",
  "trak_jax.train_main",
  "trak_jax.eval.factbench",
  "pipelines.encode_main",
  "pipelines.hessian_main",
  "pipelines.index_main",
  "pipelines.retrieve_main",
  "pipelines.score_main",
  "pipelines.evaluate_main",
  "trak_jax.plan_main",
  "trak_jax.import_main",
)


def test_every_binary_prints_its_help():
  # Started together: each is a separate process, so this takes one
  # interpreter start-up, not eight.
  processes = {
    name: subprocess.Popen(
      [sys.executable, "-m", name, "--helpshort"],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for name in BINARIES
  }
  for name, process in processes.items():
    out, err = process.communicate(timeout=300)
    # absl's help exits with status 1 after printing the flags; a clash or
    # an import error prints a traceback instead.
    assert "Traceback" not in err, f"{name}: {err[-2000:]}"
    assert "Try --helpfull" in out, f"{name}: {out[-500:]}"


def test_a_missing_required_flag_is_named():
  result = subprocess.run(
    [sys.executable, "-m", "pipelines.encode_main", "--checkpoint=x"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0
  assert "--corpus" in result.stderr
