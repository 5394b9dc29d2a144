"""Orbax checkpoints: parameters, the whole optax state, step, configs and
the tokenizer.

Layout: `<checkpoint_dir>/<step>/` with three Orbax items:

- `state`: a `TrainState` (step, params, optax state), restored straight into
  the sharded layout of a given mesh;
- `metadata`: JSON with the model and optimizer configs, the training
  settings and a digest of the parameters (the checkpoint's fingerprint);
- `tokenizer`: JSON holding the SentencePiece model (base64) or an imported
  model's Hugging Face `tokenizer.json` (`trak_jax.tokenizer.to_item`).

Keeping the whole optax state lets the encoder read Adam's `nu` or
Adafactor's `v_row`/`v_col` back (DESIGN.md section 1, "V"). The model is
any of `trak_jax.models`: checkpoints that `trak-jax-import` writes hold a
Hugging Face port, step 0 and, when the model came without its optimizer
state, no optimizer (`optimizer_config` and `opt_state` None).
"""

import hashlib
import os
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from trak_jax import files, models, partitioning
from trak_jax import optimizer as optimizer_lib
from trak_jax import tokenizer as tokenizer_lib
from trak_jax import train_state as train_state_lib

# Re-exported: callers spell them checkpoint.TrainState and
# checkpoint.abstract_train_state.
TrainState = train_state_lib.TrainState
abstract_train_state = train_state_lib.abstract_train_state


class Checkpoint(NamedTuple):
  """A checkpoint loaded onto a mesh."""

  state: TrainState
  model_config: models.ModelConfig
  optimizer_config: optimizer_lib.OptimizerConfig | None
  tokenizer: tokenizer_lib.AnyTokenizer
  metadata: dict[str, Any]  # everything in the `metadata` item
  digest: str  # sha256 of the parameters, hex
  path: str  # the step directory

  @property
  def params(self) -> Any:
    return self.state.params

  @property
  def max_len(self) -> int:
    """The longest sequence jobs feed the model: the model's own limit, or
    less where the checkpoint says so (`max_len` in its metadata, set by
    `trak-jax-import`)."""
    return min(
      self.model_config.max_len,
      self.metadata.get("max_len") or self.model_config.max_len,
    )

  @property
  def opt_state(self) -> optax.OptState:
    return self.state.opt_state


def params_digest(params: Any) -> str:
  """sha256 over parameter paths, shapes, dtypes and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    array = np.asarray(jax.device_get(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def _manager(directory: str, *, max_to_keep: int | None = 3):
  return ocp.CheckpointManager(
    files.abspath(directory),  # Orbax reads and writes gs:// itself.
    item_names=("state", "metadata", "tokenizer"),
    options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
  )


class CheckpointWriter:
  """Saves training states under one directory, one subdirectory a step."""

  def __init__(self, directory: str, *, max_to_keep: int | None = 3):
    self.directory = files.abspath(directory)
    self._manager = _manager(self.directory, max_to_keep=max_to_keep)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(
    self,
    state: TrainState,
    *,
    model_config: models.ModelConfig,
    optimizer_config: optimizer_lib.OptimizerConfig | None,
    tokenizer: tokenizer_lib.AnyTokenizer,
    extra_metadata: dict[str, Any] | None = None,
  ) -> str:
    """Saves `state` with its configs and tokenizer; returns the step dir."""
    step = int(state.step)
    metadata = {
      "step": step,
      "model_config": models.to_dict(model_config),
      "optimizer_config": (
        None if optimizer_config is None else optimizer_config.to_dict()
      ),
      "params_digest": params_digest(state.params),
      **(extra_metadata or {}),
    }
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        metadata=ocp.args.JsonSave(metadata),
        tokenizer=ocp.args.JsonSave(tokenizer_lib.to_item(tokenizer)),
      ),
    )
    self._manager.wait_until_finished()
    return os.path.join(self.directory, str(step))

  def close(self) -> None:
    self._manager.close()


def resolve_checkpoint_dir(
  path: str, step: int | None = None
) -> tuple[str, int]:
  """Finds (manager directory, step) for a run, checkpoint or step dir.

  Raises:
    FileNotFoundError: If no checkpoint is found at `path`.
  """
  path = files.abspath(path).rstrip("/")
  candidates = [os.path.join(path, "checkpoints"), path]
  base = os.path.basename(path)
  if base.isdigit():
    candidates.append(os.path.dirname(path))
    step = int(base) if step is None else step
  for directory in candidates:
    if not files.isdir(directory):
      continue
    steps = sorted(int(d) for d in files.listdir(directory) if d.isdigit())
    if steps:
      chosen = steps[-1] if step is None else step
      if chosen not in steps:
        raise FileNotFoundError(
          f"no step {chosen} in checkpoint directory {directory} (has {steps})"
        )
      return directory, chosen
  raise FileNotFoundError(f"no Orbax checkpoint found at {path}")


class Header(NamedTuple):
  """What a checkpoint says about itself, without its arrays."""

  model_config: models.ModelConfig
  optimizer_config: optimizer_lib.OptimizerConfig | None
  tokenizer: tokenizer_lib.AnyTokenizer
  metadata: dict[str, Any]
  digest: str
  path: str  # the step directory

  @property
  def max_len(self) -> int:
    """The longest sequence jobs feed the model: the model's own limit, or
    less where the checkpoint says so (`max_len` in its metadata, set by
    `trak-jax-import`)."""
    return min(
      self.model_config.max_len,
      self.metadata.get("max_len") or self.model_config.max_len,
    )


def read_header(path: str, *, step: int | None = None) -> Header:
  """Reads configs, tokenizer and digest of a checkpoint (no arrays).

  Raises:
    FileNotFoundError: If there is no checkpoint at `path`.
  """
  directory, step = resolve_checkpoint_dir(path, step)
  manager = _manager(directory, max_to_keep=None)
  try:
    header = manager.restore(
      step,
      args=ocp.args.Composite(
        metadata=ocp.args.JsonRestore(), tokenizer=ocp.args.JsonRestore()
      ),
    )
  finally:
    manager.close()
  metadata = dict(header.metadata)
  optimizer = metadata["optimizer_config"]
  return Header(
    model_config=models.from_dict(metadata["model_config"]),
    optimizer_config=(
      None
      if optimizer is None
      else optimizer_lib.OptimizerConfig.from_dict(optimizer)
    ),
    tokenizer=tokenizer_lib.from_item(dict(header.tokenizer)),
    metadata=metadata,
    digest=metadata["params_digest"],
    path=os.path.join(directory, str(step)),
  )


def load_checkpoint(
  path: str, *, mesh: Mesh | None = None, step: int | None = None
) -> Checkpoint:
  """Loads a checkpoint onto `mesh`.

  Args:
    path: A training output directory, its `checkpoints/` directory, or one
      step directory.
    mesh: Mesh to place parameters and optimizer state on; all devices on the
      `data` axis by default.
    step: The step to load; the latest by default.

  Returns:
    The checkpoint, parameters and optimizer state sharded on `mesh`.

  Raises:
    FileNotFoundError: If there is no checkpoint at `path`.
  """
  header = read_header(path, step=step)
  mesh = partitioning.make_mesh() if mesh is None else mesh
  target = abstract_train_state(
    header.model_config, header.optimizer_config, mesh
  )
  directory, step = resolve_checkpoint_dir(header.path)
  manager = _manager(directory, max_to_keep=None)
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(target)),
    )
  finally:
    manager.close()
  return Checkpoint(
    state=restored.state,
    model_config=header.model_config,
    optimizer_config=header.optimizer_config,
    tokenizer=header.tokenizer,
    metadata=header.metadata,
    digest=header.digest,
    path=header.path,
  )
