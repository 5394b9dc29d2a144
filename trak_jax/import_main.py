r"""Imports a Hugging Face causal LM as a checkpoint every job reads.

  trak-jax-import --source=path/to/hf_model --output_dir=out/imported
  trak-jax-encode --checkpoint=out/imported ...

The source holds `config.json`, `model.safetensors` (or shards with
`model.safetensors.index.json`) and `tokenizer.json`, of a GPT-2, GPT-NeoX
(Pythia) or Llama-family (Llama 2/3, Mistral, Qwen2) model, and optionally
the model's optax state saved with Orbax (`--optimizer_state`). Nothing is
downloaded and torch is not needed.
"""

from absl import app, flags

from trak_jax.hf import importer

_SOURCE = flags.DEFINE_string(
  "source", None, "Hugging Face checkpoint directory.", required=True
)
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", None, "Where the checkpoint goes.", required=True
)
_DTYPE = flags.DEFINE_enum(
  "dtype", "float32", ["float32", "bfloat16"], "Activation dtype."
)
_MAX_LEN = flags.DEFINE_integer(
  "max_len",
  None,
  "Longest sequence the jobs feed the model (the model's limit if unset).",
)
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate",
  None,
  "End-of-training learning rate: tail-patch's step size (needed with "
  "--optimizer_state).",
)
_OPTIMIZER_STATE = flags.DEFINE_string(
  "optimizer_state",
  None,
  "Orbax checkpoint of the model's optax state (Adam or Adafactor).",
)


def main(argv):
  del argv
  path = importer.import_checkpoint(
    _SOURCE.value,
    _OUTPUT_DIR.value,
    dtype=_DTYPE.value,
    max_len=_MAX_LEN.value,
    learning_rate=_LEARNING_RATE.value,
    optimizer_state=_OPTIMIZER_STATE.value,
  )
  print(f"checkpoint: {path}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
