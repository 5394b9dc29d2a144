"""Command line: writes the held-out facts (trak-jax-heldout-facts)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from absl import app, flags

from trak_jax.eval.heldout_facts.assemble import generate
from trak_jax.eval.heldout_facts.config import HeldoutFactsConfig
from trak_jax.eval.heldout_facts.output import summary, write_jsonl


def _define_flags() -> None:
  # Flags are defined here, not at import, so importing this library module
  # never clashes with another binary's flags.
  flags.DEFINE_string("output_dir", None, "Directory for the JSONL files.")
  flags.DEFINE_enum("preset", "demo", ["tiny", "demo"], "Size preset.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.mark_flag_as_required("output_dir")


def _run(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  preset = getattr(HeldoutFactsConfig, values.preset)
  start = time.perf_counter()
  bench = generate(preset(seed=values.seed))
  write_jsonl(bench, values.output_dir)
  counts = summary(bench)
  counts["seconds"] = round(time.perf_counter() - start, 2)
  print(json.dumps(counts, indent=2))


def main() -> None:
  """Console entry point: writes the data set (trak-jax-heldout-facts)."""
  _define_flags()
  app.run(_run)


if __name__ == "__main__":
  main()
