"""What every launch script shares: flags, gin, dry runs and running.

Each call builds its own `flags.FlagValues`, so scripts can be called
in-process (as the tests do) without sharing parsed state, and the global
`--gin_file` that the pipeline binaries define is never redefined.
"""

import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence

from absl import flags

from tpu_launch import config

Command = list[str]
Builder = Callable[[config.LaunchConfig], list[Command]]
_DEFINE = {
  str: flags.DEFINE_string,
  bool: flags.DEFINE_bool,
  int: flags.DEFINE_integer,
  list: flags.DEFINE_multi_string,
}
USAGE_ERROR = 2


def _define_flags(fields: Sequence[str]) -> flags.FlagValues:
  """Fresh flags: the common ones and one per launch field, all unset."""
  flag_values = flags.FlagValues()
  flags.DEFINE_bool(
    "dry_run",
    False,
    "Print the commands; run nothing.",
    flag_values=flag_values,
  )
  flags.DEFINE_multi_string(
    "gin_file",
    [],
    "Launch gin files (paths, or under configs/).",
    flag_values=flag_values,
  )
  flags.DEFINE_multi_string(
    "gin_bindings",
    [],
    "Launch gin bindings, e.g. launch.zone='...'.",
    flag_values=flag_values,
  )
  for name in fields:
    meta = config.FIELDS[name].metadata
    _DEFINE[meta["kind"]](name, None, meta["help"], flag_values=flag_values)
  return flag_values


def _fail(message: str) -> None:
  """Reports a usage error on stderr and exits with code 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_ERROR)


def _print_help(flag_values: flags.FlagValues, doc: str) -> None:
  """Prints the script's docstring and its flags, then exits."""
  print(doc.strip(), end="\n\n")
  print(flag_values.module_help(__name__))
  sys.exit(0)


def parse(
  argv: Sequence[str],
  *,
  fields: Sequence[str],
  required: Sequence[str],
  doc: str = "",
) -> tuple[config.LaunchConfig, bool]:
  """Parses argv (program name first) and gin into a checked config.

  Returns:
    The config and whether this is a dry run.
  """
  flag_values = _define_flags(fields)
  if any(arg in ("--help", "-h", "--helpfull") for arg in argv[1:]):
    _print_help(flag_values, doc)
  try:
    extra = flag_values(list(argv))[1:]
  except flags.Error as error:
    _fail(str(error))
  if extra:
    _fail(f"unexpected arguments: {shlex.join(extra)}")
  given = {name: flag_values[name].value for name in fields}
  try:
    gin_values = config.read_gin(flag_values.gin_file, flag_values.gin_bindings)
    launch_config = config.merge(gin_values, given)
    config.require(launch_config, required)
  except config.ConfigError as error:
    _fail(str(error))
  return launch_config, flag_values.dry_run


def execute(commands: Sequence[Command], *, dry_run: bool) -> None:
  """Prints each command (dry run) or runs them in order, stopping at the
  first that fails (exiting with its code)."""
  for command in commands:
    if dry_run:
      print(shlex.join(command))
      continue
    print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
    try:
      subprocess.run(command, check=True)
    except OSError as error:  # Typically: gcloud is not installed.
      print(f"error: cannot run {command[0]}: {error}", file=sys.stderr)
      sys.exit(1)
    except subprocess.CalledProcessError as error:
      print(f"error: exit code {error.returncode}", file=sys.stderr)
      sys.exit(error.returncode)


def main(
  argv: Sequence[str] | None,
  *,
  fields: Sequence[str],
  required: Sequence[str],
  build: Builder,
  doc: str = "",
) -> None:
  """Parses, builds the commands and prints or runs them.

  Args:
    argv: Command line, program name first (`sys.argv` when None).
    fields: The launch fields this script takes as flags.
    required: Fields that must be set (by flag or gin).
    build: Turns the config into commands; raises `config.ConfigError` for
      a config it cannot launch.
    doc: What `--help` prints above the flags (the script's docstring).
  """
  argv = sys.argv if argv is None else argv
  launch_config, dry_run = parse(
    argv, fields=fields, required=required, doc=doc
  )
  try:
    commands = build(launch_config)
  except config.ConfigError as error:
    _fail(str(error))
  execute(commands, dry_run=dry_run)
