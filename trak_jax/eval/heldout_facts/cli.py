"""Command line: writes the held-out facts (trak-jax-heldout-facts).

The binary is FactBench's (`trak_jax.eval.factbench.cli.run`), with this
generator's config, data set and counts.
"""

from __future__ import annotations

from trak_jax.eval.factbench import cli as factbench_cli
from trak_jax.eval.heldout_facts.assemble import generate
from trak_jax.eval.heldout_facts.config import HeldoutFactsConfig
from trak_jax.eval.heldout_facts.output import summary, write_jsonl


def main() -> None:
  """Console entry point: writes the data set (trak-jax-heldout-facts)."""
  factbench_cli.run(
    config_class=HeldoutFactsConfig,
    generate_fn=generate,
    write_fn=write_jsonl,
    summary_fn=summary,
  )


if __name__ == "__main__":
  main()
