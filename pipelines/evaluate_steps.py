"""The evaluation's steps: each recorded once finished, so a rerun resumes.

`Steps` keeps a record per finished step under the output directory's
steps/ (`STEPS_DIR`); `log` is the evaluation's progress line.
"""

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from trak_jax import files


def log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


STEPS_DIR = "steps"  # Under the output directory: a record per finished step.


class Steps:
  """The evaluation's steps, each recorded once it has finished, so that a
  rerun resumes after the last finished one.

  A step's record (steps/<name>.json) holds what it ran with: the repr of
  its inputs (a job's options, the checkpoint's header). It is removed
  before the step runs and written once the step has returned, so a step
  that failed or was stopped has none. A rerun skips a step whose record
  holds the same inputs unless a step it reads (`after`) ran in this
  evaluation. Inputs are compared by value, not by the files' contents: a
  corpus or checkpoint changed in place needs `resume=False`.

  Args:
    output_dir: The evaluation's output directory.
    resume: Whether finished steps are skipped.
  """

  def __init__(self, output_dir: str, *, resume: bool):
    self.directory = os.path.join(output_dir, STEPS_DIR)
    self._resume = resume
    self.ran: list[str] = []
    self.skipped: list[str] = []

  def path(self, name: str, suffix: str = ".json") -> str:
    """Where step `name` keeps its record (or, with another suffix, what it
    computed in process)."""
    return os.path.join(self.directory, name + suffix)

  def _recorded(self, name: str) -> dict[str, Any] | None:
    if not files.exists(self.path(name)):
      return None
    with files.open(self.path(name)) as f:
      return json.load(f)

  def run(
    self,
    name: str,
    inputs: Any,
    job: Callable[[], Any],
    *,
    after: Sequence[str] = (),
  ) -> bool:
    """Runs `job` unless step `name` finished before from the same inputs
    and no step in `after` ran now; returns whether it ran."""
    record = {"step": name, "inputs": repr(inputs)}
    fresh = not set(after) & set(self.ran)
    if self._resume and fresh and self._recorded(name) == record:
      log(f"{name}: finished before from the same inputs, skipped")
      self.skipped.append(name)
      return False
    files.makedirs(self.directory)
    files.remove(self.path(name))
    job()
    files.write_json(self.path(name), record)
    self.ran.append(name)
    return True
