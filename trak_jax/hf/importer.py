"""A Hugging Face checkpoint directory -> a checkpoint every job reads.

`import_checkpoint(source, output_dir)` reads `config.json`, the safetensors
(sharded or not) and `tokenizer.json`, checks them against each other, and
only then writes an Orbax checkpoint (`trak_jax.checkpoint`, step 0) under
`output_dir/checkpoints/`: the port's parameters (float32), no optimizer
state, the port's config and the Hugging Face tokenizer. Orbax finalises a
step directory only once it is whole, and nothing is written before every
check has passed, so a failed import never leaves a finished checkpoint.

The tokenizer is Hugging Face's own (`tokenizers`, from `tokenizer.json`);
the ids put around examples come from `tokenizer_config.json`'s
`bos_token` / `eos_token` (a string or an added-token dict), else from
`config.json`'s `bos_token_id` / `eos_token_id`, else none.
"""

import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from trak_jax import checkpoint as checkpoint_lib
from trak_jax import files
from trak_jax import tokenizer as tokenizer_lib
from trak_jax.hf import config as config_lib
from trak_jax.hf import loader

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class HFTokenizerError(ValueError):
  """A tokenizer that does not fit the checkpoint, naming file and field."""


def _token_id(
  tokenizer: tokenizer_lib.HFTokenizer, token: Any, where: str
) -> int | None:
  if token is None:
    return None
  content = token.get("content") if isinstance(token, dict) else token
  token_id = tokenizer.token_to_id(content)
  if token_id is None:
    raise HFTokenizerError(
      f"{where}: token {content!r} is not in the vocabulary"
    )
  return token_id


def _special_ids(
  source: pathlib.Path, tokenizer: tokenizer_lib.HFTokenizer
) -> tuple[int | None, int | None]:
  """(bos id, eos id) of a checkpoint directory, see the module docstring."""
  settings = source / TOKENIZER_CONFIG_FILE
  if settings.is_file():
    values = json.loads(settings.read_text())
    return tuple(
      _token_id(tokenizer, values.get(field), f"{settings}: field {field!r}")
      for field in ("bos_token", "eos_token")
    )
  values = json.loads(config_lib.config_path(source).read_text())
  return values.get("bos_token_id"), values.get("eos_token_id")


def read_tokenizer(
  source: str | pathlib.Path, config: config_lib.HFConfig
) -> tokenizer_lib.HFTokenizer:
  """The checkpoint's tokenizer, checked against its embedding.

  Raises:
    HFTokenizerError: If `tokenizer.json` is missing or unreadable, a
      special token is unknown, or the vocabulary has more ids than the
      embedding has rows.
  """
  source = pathlib.Path(source)
  path = source / TOKENIZER_FILE
  if not path.is_file():
    raise HFTokenizerError(
      f"{path}: no such file (the fast tokenizer's {TOKENIZER_FILE} is needed)"
    )
  try:
    tokenizer = tokenizer_lib.HFTokenizer(
      path.read_text(), bos_id=None, eos_id=None
    )
  except Exception as error:  # tokenizers raises its own untyped errors.
    raise HFTokenizerError(f"{path}: unreadable ({error})") from error
  bos_id, eos_id = _special_ids(source, tokenizer)
  tokenizer = tokenizer_lib.HFTokenizer(
    tokenizer.tokenizer_json, bos_id=bos_id, eos_id=eos_id
  )
  if tokenizer.vocab_size > config.vocab_size:
    raise HFTokenizerError(
      f"{path}: vocabulary of {tokenizer.vocab_size} tokens does not fit the "
      f"embedding's {config.vocab_size} rows ({config_lib.config_path(source)}"
      ": field 'vocab_size')"
    )
  return tokenizer


def import_checkpoint(
  source: str | pathlib.Path,
  output_dir: str,
  *,
  dtype: str = "float32",
  max_len: int | None = None,
  learning_rate: float | None = None,
) -> str:
  """Imports a Hugging Face causal-LM directory as a trak_jax checkpoint.

  Args:
    source: Holds `config.json`, `model.safetensors` (or shards and
      `model.safetensors.index.json`) and `tokenizer.json`.
    output_dir: The checkpoint goes to `output_dir/checkpoints/0`; jobs take
      `--checkpoint=output_dir`.
    dtype: Activation dtype of the port, "float32" or "bfloat16"
      (parameters are kept in float32).
    max_len: The longest sequence jobs feed the model (examples are
      truncated to it); the model's own limit by default.
    learning_rate: Recorded as the step size of tail-patch, which otherwise
      has no learning rate to take from a checkpoint without an optimizer.

  Returns:
    The step directory written.

  Raises:
    HFConfigError, HFWeightsError, HFTokenizerError: The directory cannot be
      imported; the message names the file and the field or tensor.
    FileExistsError: If `output_dir` already holds a checkpoint.
  """
  config = config_lib.read_config(source, dtype=dtype)
  tokenizer = read_tokenizer(source, config)
  params = loader.load_params(source, config)
  target = os.path.join(files.abspath(output_dir), "checkpoints")
  if files.exists(target) and files.listdir(target):
    raise FileExistsError(f"{target}: a checkpoint is already there")
  state = checkpoint_lib.TrainState(
    step=jnp.asarray(0, jnp.int32), params=params, opt_state=None
  )
  writer = checkpoint_lib.CheckpointWriter(target, max_to_keep=None)
  try:
    return writer.save(
      state,
      model_config=config,
      optimizer_config=None,
      tokenizer=tokenizer,
      extra_metadata={
        "imported_from": {
          "source": str(pathlib.Path(source).resolve()),
          "parameters": int(sum(np.size(p) for p in jax.tree.leaves(params))),
        },
        "max_len": max_len,
        "final_learning_rate": learning_rate,
      },
    )
  finally:
    writer.close()
