"""Command line: writes FactBench JSONL files (trak-jax-factbench).

`run` is the binary of both fact generators: FactBench's `main` and the
held-out facts' (`trak_jax.eval.heldout_facts.cli`) call it with their own
config, generator, writer and counts.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from trak_jax.eval.factbench.assemble import generate
from trak_jax.eval.factbench.config import FactBenchConfig
from trak_jax.eval.factbench.output import summary, write_jsonl


def _define_flags() -> None:
  # Flags are defined here, not at import, so importing this library module
  # never clashes with another binary's flags.
  flags.DEFINE_string("output_dir", None, "Directory for the JSONL files.")
  flags.DEFINE_enum("preset", "demo", ["tiny", "demo"], "Size preset.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.mark_flag_as_required("output_dir")


def _generate_and_write(
  argv: Sequence[str],
  *,
  config_class: type,
  generate_fn: Callable[[Any], Any],
  write_fn: Callable[[Any, str], Any],
  summary_fn: Callable[[Any], dict],
) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  preset = getattr(config_class, values.preset)
  start = time.perf_counter()
  bench = generate_fn(preset(seed=values.seed))
  write_fn(bench, values.output_dir)
  counts = summary_fn(bench)
  counts["seconds"] = round(time.perf_counter() - start, 2)
  print(json.dumps(counts, indent=2))


def run(
  *,
  config_class: type,
  generate_fn: Callable[[Any], Any],
  write_fn: Callable[[Any, str], Any],
  summary_fn: Callable[[Any], dict],
) -> None:
  """Runs a fact generator's binary: flags, generate, write, print counts.

  The flags are `--output_dir` (required), `--preset` (`tiny` or `demo`) and
  `--seed`; the counts are printed as JSON with the seconds taken.

  Args:
    config_class: the generator's config, with `tiny` and `demo` presets
      that take a keyword `seed`.
    generate_fn: config -> the data set.
    write_fn: (data set, output directory) -> written paths.
    summary_fn: data set -> counts (a JSON-serialisable dict).
  """
  _define_flags()
  app.run(
    functools.partial(
      _generate_and_write,
      config_class=config_class,
      generate_fn=generate_fn,
      write_fn=write_fn,
      summary_fn=summary_fn,
    )
  )


def main() -> None:
  """Console entry point: writes FactBench JSONL files (trak-jax-factbench)."""
  run(
    config_class=FactBenchConfig,
    generate_fn=generate,
    write_fn=write_jsonl,
    summary_fn=summary,
  )


if __name__ == "__main__":
  main()
