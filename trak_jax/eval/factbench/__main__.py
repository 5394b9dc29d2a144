"""Writes FactBench's JSONL files (trak-jax-factbench).

python -m trak_jax.eval.factbench --output_dir=DIR [--preset=tiny] [--seed=N]
"""

from trak_jax.eval.factbench import cli

if __name__ == "__main__":
  cli.main()
