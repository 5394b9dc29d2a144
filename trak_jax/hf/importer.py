"""A Hugging Face checkpoint directory -> a checkpoint every job reads.

`import_checkpoint(source, output_dir)` reads `config.json`, the safetensors
(sharded or not) and `tokenizer.json`, checks them against each other, and
only then writes an Orbax checkpoint (`trak_jax.checkpoint`, step 0) under
`output_dir/checkpoints/`: the port's parameters (float32), no optimizer
state, the port's config and the Hugging Face tokenizer. Orbax finalises a
step directory only once it is whole, and nothing is written before every
check has passed, so a failed import never leaves a finished checkpoint.

An optimizer state can come too (`optimizer_state`): an optax state of the
port's parameters saved with Orbax (`ocp.StandardCheckpointer().save`), of
Adam (`mu`, `nu`, `count`) or Adafactor (`v_row`, `v_col`, `v`, `count`),
whatever optax chain held it. Its statistics are found by name, checked
against the parameters, and put into the state of trak_jax's own AdamW or
Adafactor (`trak_jax.optimizer`), so the correction reads the model's own
second moments and tail-patch steps with the optimizer from them. PyTorch
optimizer files (`optimizer.pt`) are not read: their moments are keyed by
the torch module's parameter order, which a safetensors checkpoint does not
record.

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
import optax
import orbax.checkpoint as ocp

from trak_jax import checkpoint as checkpoint_lib
from trak_jax import files
from trak_jax import optimizer as optimizer_lib
from trak_jax import tokenizer as tokenizer_lib
from trak_jax.hf import config as config_lib
from trak_jax.hf import loader

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class HFTokenizerError(ValueError):
  """A tokenizer that does not fit the checkpoint, naming file and field."""


class OptimizerStateError(ValueError):
  """An optimizer state that does not fit the parameters, naming where."""


# The statistics of each optimizer, found by name in an optax state.
_STATISTICS = {
  "adamw": ("count", "mu", "nu"),
  "adafactor": ("count", "v_row", "v_col", "v"),
}


def _nodes_with(tree: Any, key: str) -> list[dict[str, Any]]:
  """Every dict of a restored (raw) state that has `key`."""
  if isinstance(tree, dict):
    found = [tree] if key in tree else []
    return found + [n for v in tree.values() for n in _nodes_with(v, key)]
  if isinstance(tree, list | tuple):
    return [n for v in tree for n in _nodes_with(v, key)]
  return []


def _statistics(path: str, raw: Any) -> tuple[str, dict[str, Any]]:
  """(optimizer name, its statistics by name) of a restored optax state."""
  for name, keys in _STATISTICS.items():
    nodes = _nodes_with(raw, keys[-1])
    if len(nodes) > 1:
      raise OptimizerStateError(
        f"{path}: {len(nodes)} optimizer states hold {keys[-1]!r}"
      )
    if nodes:
      missing = [k for k in keys if k not in nodes[0]]
      if missing:
        raise OptimizerStateError(f"{path}: {name} state lacks {missing}")
      return name, {k: nodes[0][k] for k in keys}
  raise OptimizerStateError(
    f"{path}: no Adam ('nu') or Adafactor ('v_row', 'v_col') statistics"
  )


def _min_dim_to_factor(params: Any, v: Any) -> int:
  """Adafactor's `min_dim_size_to_factor` that factored what `v` shows."""
  sizes = [
    sorted(p.shape)[-2]
    for p, full in zip(jax.tree.leaves(params), jax.tree.leaves(v), strict=True)
    if p.ndim >= 2 and np.shape(full) != p.shape
  ]
  return min(sizes) if sizes else 1 << 30


def _check_fits(path: str, name: str, found: Any, expected: Any) -> Any:
  """`found` as arrays shaped like `expected`, or an error naming the leaf."""
  if name == "count":
    return jnp.asarray(found, jnp.int32)
  try:
    pairs = jax.tree.map(lambda f, e: (f, e), found, expected)
  except ValueError as error:
    raise OptimizerStateError(
      f"{path}: {name!r} is not shaped like the model's parameters ({error})"
    ) from error

  def check(keypath, pair):
    found_leaf, expected_leaf = pair
    if np.shape(found_leaf) != np.shape(expected_leaf):
      raise OptimizerStateError(
        f"{path}: {name}{jax.tree_util.keystr(keypath)} has shape "
        f"{np.shape(found_leaf)}, the model needs {np.shape(expected_leaf)}"
      )
    return jnp.asarray(found_leaf, jnp.float32)

  return jax.tree_util.tree_map_with_path(
    check, pairs, is_leaf=lambda x: isinstance(x, tuple)
  )


def read_optimizer_state(
  path: str, params: Any, *, learning_rate: float
) -> tuple[optimizer_lib.OptimizerConfig, Any]:
  """The optimizer and state of an Orbax-saved optax state of `params`.

  Args:
    path: The Orbax checkpoint directory of the state.
    params: The port's parameters.
    learning_rate: The end-of-training learning rate (tail-patch's step).

  Returns:
    (trak_jax's optimizer config, its state holding the found statistics).

  Raises:
    OptimizerStateError: If `path` holds no such state, or a statistic does
      not fit the parameters; the message names the path and the leaf.
  """
  try:
    raw = ocp.StandardCheckpointer().restore(files.abspath(path))
  except Exception as error:  # Orbax raises many kinds; all mean unreadable.
    raise OptimizerStateError(
      f"{path}: not a readable Orbax checkpoint ({error})"
    ) from error
  name, found = _statistics(path, raw)
  extra = {}
  if name == "adafactor":
    extra["min_dim_size_to_factor"] = _min_dim_to_factor(params, found["v"])
  config = optimizer_lib.OptimizerConfig(
    name=name,
    learning_rate=learning_rate,
    end_learning_rate_ratio=1.0,
    warmup_steps=0,
    total_steps=1,
    **extra,
  )
  state = optimizer_lib.make_optimizer(config).init(params)
  values = {
    key: _check_fits(
      path,
      key,
      value,
      optax.tree_utils.tree_get_all_with_path(state, key)[0][1],
    )
    for key, value in found.items()
  }
  return config, optax.tree_utils.tree_set(state, **values)


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
  optimizer_state: str | None = None,
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
    learning_rate: The end-of-training learning rate: tail-patch's step
      size (needed with `optimizer_state`).
    optimizer_state: An Orbax-saved optax state of the model (see the
      module docstring); None: the checkpoint has no optimizer state.

  Returns:
    The step directory written.

  Raises:
    HFConfigError, HFWeightsError, HFTokenizerError, OptimizerStateError:
      The directory cannot be imported; the message names the file and the
      field or tensor.
    FileExistsError: If `output_dir` already holds a checkpoint.
  """
  config = config_lib.read_config(source, dtype=dtype)
  tokenizer = read_tokenizer(source, config)
  params = loader.load_params(source, config)
  optimizer_config = opt_state = None
  if optimizer_state is not None:
    if learning_rate is None:
      raise ValueError("an imported optimizer state needs its learning_rate")
    optimizer_config, opt_state = read_optimizer_state(
      optimizer_state, params, learning_rate=learning_rate
    )
  target = os.path.join(files.abspath(output_dir), "checkpoints")
  if files.exists(target) and files.listdir(target):
    raise FileExistsError(f"{target}: a checkpoint is already there")
  state = checkpoint_lib.TrainState(
    step=jnp.asarray(0, jnp.int32), params=params, opt_state=opt_state
  )
  writer = checkpoint_lib.CheckpointWriter(target, max_to_keep=None)
  try:
    return writer.save(
      state,
      model_config=config,
      optimizer_config=optimizer_config,
      tokenizer=tokenizer,
      extra_metadata={
        "imported_from": {
          "source": str(pathlib.Path(source).resolve()),
          "parameters": int(sum(np.size(p) for p in jax.tree.leaves(params))),
          "optimizer_state": optimizer_state,
        },
        "max_len": max_len,
        "final_learning_rate": learning_rate,
      },
    )
  finally:
    writer.close()
