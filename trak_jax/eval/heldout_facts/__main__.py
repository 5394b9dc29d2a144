"""Writes the held-out facts' JSONL files (trak-jax-heldout-facts).

python -m trak_jax.eval.heldout_facts --output_dir=DIR [--preset=tiny]
"""

from trak_jax.eval.heldout_facts import cli

if __name__ == "__main__":
  cli.main()
