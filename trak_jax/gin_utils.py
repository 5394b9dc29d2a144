"""Gin plumbing shared by the binaries: parse, then record what ran.

Library functions know nothing of gin; binaries make them configurable with
`gin.get_configurable` on functions the .gin files register through
`from __gin__ import dynamic_registration` (as t5x does).
"""

import contextlib
import logging
import os
from collections.abc import Sequence

import gin

from trak_jax import files

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin")
OPERATIVE_CONFIG = "config.gin"


def parse(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> None:
  """Parses config files and bindings; includes resolve against `gin/`.

  Raises:
    FileNotFoundError: If a named config file exists neither as given nor
      under the project's `gin/` directory.
  """
  gin.add_config_file_search_path(GIN_DIR)
  resolved = []
  for path in gin_files:
    candidate = path if os.path.exists(path) else os.path.join(GIN_DIR, path)
    if not os.path.exists(candidate):
      raise FileNotFoundError(
        f"gin file {path!r} not found (also looked in {GIN_DIR})"
      )
    resolved.append(candidate)
  with _quiet_resource_lookups():
    gin.parse_config_files_and_bindings(resolved, list(gin_bindings))


def _not_a_resource_miss(record: logging.LogRecord) -> bool:
  return not record.pathname.endswith(os.path.join("gin", "resource_reader.py"))


@contextlib.contextmanager
def _quiet_resource_lookups():
  """Drops the "Path not found" line gin logs for every include before it
  finds the file under `gin/` (it looks for a Python resource first)."""
  root = logging.getLogger()
  root.addFilter(_not_a_resource_miss)
  try:
    yield
  finally:
    root.removeFilter(_not_a_resource_miss)


def write_operative_config(output_dir: str) -> str:
  """Writes the config that actually ran to `<output_dir>/config.gin`."""
  files.makedirs(output_dir)
  path = os.path.join(output_dir, OPERATIVE_CONFIG)
  with files.open(path, "w") as f:
    f.write(gin.operative_config_str())
  return path
