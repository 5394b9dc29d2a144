"""Writes a small Hugging Face checkpoint directory with random weights.

For trying `trak-jax-import` (and every job after it) without a download,
and for tests: `config.json` of a GPT-2, GPT-NeoX or Llama-family model,
`model.safetensors` (or shards with `model.safetensors.index.json`) holding
the port's freshly initialised parameters under Hugging Face's tensor names,
and a byte-level BPE `tokenizer.json` trained on the given texts with
`tokenizer_config.json` naming its BOS and EOS tokens. The layout is the one
`transformers`' `save_pretrained` writes, so the import reads it as it reads
a downloaded model.

  python -m trak_jax.hf.synthetic --corpus=corpus.jsonl --output_dir=DIR
"""

import json
import pathlib
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from safetensors import numpy as safetensors_np

from trak_jax.hf import config as config_lib
from trak_jax.hf import loader, weights

# Special tokens as each family's own tokenizer spells them.
_SPECIAL = {
  "gpt2": ("<|endoftext|>", "<|endoftext|>"),
  "gpt_neox": ("<|endoftext|>", "<|endoftext|>"),
  "llama": ("<s>", "</s>"),
  "mistral": ("<s>", "</s>"),
  "qwen2": (None, "<|endoftext|>"),
}


def config_json(
  model_type: str,
  *,
  vocab_size: int,
  hidden_size: int = 32,
  num_layers: int = 2,
  num_heads: int = 4,
  num_kv_heads: int = 2,
  intermediate_size: int = 64,
  max_positions: int = 128,
) -> dict[str, Any]:
  """A `config.json` of `model_type` with the given shape."""
  if model_type == "gpt2":
    return {
      "model_type": "gpt2",
      "vocab_size": vocab_size,
      "n_embd": hidden_size,
      "n_layer": num_layers,
      "n_head": num_heads,
      "n_inner": intermediate_size,
      "n_positions": max_positions,
    }
  common = {
    "model_type": model_type,
    "vocab_size": vocab_size,
    "hidden_size": hidden_size,
    "num_hidden_layers": num_layers,
    "num_attention_heads": num_heads,
    "intermediate_size": intermediate_size,
    "max_position_embeddings": max_positions,
    "tie_word_embeddings": False,
  }
  if model_type == "gpt_neox":
    return {**common, "rotary_pct": 0.5, "hidden_act": "gelu"}
  if model_type not in _SPECIAL:
    raise ValueError(f"model_type {model_type!r} not one of {sorted(_SPECIAL)}")
  return {**common, "num_key_value_heads": num_kv_heads, "hidden_act": "silu"}


def train_tokenizer(
  texts: Iterable[str], *, vocab_size: int, bos: str | None, eos: str
) -> tokenizers.Tokenizer:
  """A byte-level BPE tokenizer (GPT-2's kind) trained on `texts`."""
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
    add_prefix_space=False
  )
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  special = sorted({token for token in (bos, eos) if token is not None})
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=special,
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tokenizer.train_from_iterator(list(texts), trainer=trainer)
  return tokenizer


def _hf_tensors(config: config_lib.HFConfig, seed: int) -> dict[str, Any]:
  """The port's random parameters under their Hugging Face names."""
  module = loader.build_module(config)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = nn.unbox(module.init(jax.random.key(seed), ids)["params"])
  architecture = loader.ARCHITECTURES[type(config)]
  tensors = {}
  for mapping in architecture.tensor_mappings(config, architecture.hf_prefix):
    value = params
    for key in mapping.flax_path:
      value = value[key]
    value = np.asarray(value, np.float32)
    tensors[mapping.hf_name] = np.ascontiguousarray(
      value.T if mapping.transpose else value
    )
  return tensors


def _write_tensors(
  directory: pathlib.Path, tensors: dict[str, Any], num_shards: int
) -> None:
  if num_shards == 1:
    safetensors_np.save_file(tensors, directory / weights.SINGLE_FILE)
    return
  names = sorted(tensors)
  weight_map = {}
  for shard in range(num_shards):
    file = f"model-{shard + 1:05d}-of-{num_shards:05d}.safetensors"
    chosen = names[shard::num_shards]
    safetensors_np.save_file(
      {name: tensors[name] for name in chosen}, directory / file
    )
    weight_map.update(dict.fromkeys(chosen, file))
  index = {"metadata": {}, "weight_map": weight_map}
  (directory / weights.INDEX_FILE).write_text(json.dumps(index, indent=2))


def write_checkpoint(
  directory: str | pathlib.Path,
  texts: Iterable[str],
  *,
  model_type: str = "llama",
  vocab_size: int = 512,
  num_shards: int = 1,
  seed: int = 0,
  **shape: int,
) -> pathlib.Path:
  """Writes a random checkpoint of `model_type` with a tokenizer of `texts`.

  Args:
    directory: Created if missing.
    texts: What the tokenizer is trained on.
    model_type: "gpt2", "gpt_neox", "llama", "mistral" or "qwen2".
    vocab_size: The tokenizer's vocabulary and the embedding's rows.
    num_shards: Safetensors files (more than 1: with an index).
    seed: Seeds the weights.
    **shape: `config_json`'s shape arguments.

  Returns:
    The directory.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  values = config_json(model_type, vocab_size=vocab_size, **shape)
  (directory / config_lib.CONFIG_FILE).write_text(json.dumps(values, indent=2))
  bos, eos = _SPECIAL[model_type]
  tokenizer = train_tokenizer(texts, vocab_size=vocab_size, bos=bos, eos=eos)
  tokenizer.save(str(directory / "tokenizer.json"))
  settings = {"bos_token": bos, "eos_token": eos}
  (directory / "tokenizer_config.json").write_text(json.dumps(settings))
  config = config_lib.read_config(directory)
  _write_tensors(directory, _hf_tensors(config, seed), num_shards)
  return directory


def main(argv):
  del argv
  from absl import flags

  from trak_jax import data as data_lib

  values = flags.FLAGS
  texts = [e.text for e in data_lib.read_corpus(values.corpus)]
  path = write_checkpoint(
    values.output_dir,
    texts,
    model_type=values.model_type,
    vocab_size=values.vocab_size,
    seed=values.seed,
    hidden_size=values.hidden_size,
    num_layers=values.num_layers,
  )
  print(f"wrote {path}")


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("corpus", None, "Corpus JSONL the tokenizer learns.")
  flags.DEFINE_string("output_dir", None, "Where the checkpoint goes.")
  flags.DEFINE_string("model_type", "llama", "gpt2, gpt_neox, llama, ...")
  flags.DEFINE_integer("vocab_size", 512, "Vocabulary size.")
  flags.DEFINE_integer("hidden_size", 64, "Width.")
  flags.DEFINE_integer("num_layers", 2, "Blocks.")
  flags.DEFINE_integer("seed", 0, "Seeds the weights.")
  flags.mark_flags_as_required(["corpus", "output_dir"])
  app.run(main)
