r"""Trains the language model from gin.

  trak-jax-train --gin_file=experiments/demo.gin \
    --gin_bindings="train.train.corpus_path='out/demo/data/corpus.jsonl'" \
    --gin_bindings="train.train.output_dir='out/demo/model'"
"""

import gin
from absl import app, flags

from trak_jax import gin_utils, train

_GIN_FILES = flags.DEFINE_multi_string(
  "gin_file", [], "Gin config files (paths, or relative to gin/)."
)
_GIN_BINDINGS = flags.DEFINE_multi_string(
  "gin_bindings", [], "Gin bindings overriding the files."
)


def main(argv):
  del argv
  gin_utils.parse(_GIN_FILES.value, _GIN_BINDINGS.value)
  result = gin.get_configurable(train.train)()
  gin_utils.write_operative_config(result.output_dir)
  print(f"checkpoint: {result.checkpoint_path}")
  print(f"final loss: {result.final_loss:.4f}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
