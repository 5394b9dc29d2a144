"""Hugging Face safetensors -> the port's parameter tree, with no torch.

A checkpoint directory holds either `model.safetensors` or shards listed in
`model.safetensors.index.json` (`weight_map`: tensor name -> shard file).
Tensors are read with safetensors' numpy API (`safe_open(...,
framework="np")`; importing `ml_dtypes` lets numpy hold bfloat16). Each
architecture describes its tensors as `TensorMapping`s (HF name -> Flax path,
transposed or not); `load_params` checks every tensor against the shape the
port expects and stores it as float32. Every error names the file and the
tensor. Imports no JAX.
"""

import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
from safetensors import safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class HFWeightsError(ValueError):
  """A checkpoint's tensors do not match the port; names file and tensor."""


class TensorMapping(NamedTuple):
  hf_name: str  # e.g. "model.layers.0.self_attn.q_proj.weight"
  flax_path: tuple[str, ...]  # e.g. ("layers_0", "self_attn", "q_proj", ...)
  # torch Linear stores [out, in]; Flax Dense kernels are [in, out].
  transpose: bool = False


class TensorSource:
  """The tensors of one checkpoint directory, read lazily by name."""

  def __init__(self, directory: str | pathlib.Path):
    """Finds the files and which tensor lives in which.

    Args:
      directory: A Hugging Face checkpoint directory.

    Raises:
      HFWeightsError: If it has neither file, or the index lists a shard that
        is not there.
    """
    self.directory = pathlib.Path(directory)
    index = self.directory / INDEX_FILE
    single = self.directory / SINGLE_FILE
    if index.is_file():
      self._files = self._read_index(index)
      self.description = str(index)
    elif single.is_file():
      with _open(single) as f:
        self._files = dict.fromkeys(f.keys(), single)
      self.description = str(single)
    else:
      raise HFWeightsError(
        f"{self.directory}: neither {SINGLE_FILE} nor {INDEX_FILE}"
      )

  @staticmethod
  def _read_index(index: pathlib.Path) -> dict[str, pathlib.Path]:
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as error:
      raise HFWeightsError(f"{index}: no readable 'weight_map'") from error
    files = {name: index.parent / shard for name, shard in weight_map.items()}
    for name, shard in sorted(files.items()):
      if not shard.is_file():
        raise HFWeightsError(
          f"{index}: shard {shard.name!r} (holding tensor {name!r}) is missing"
        )
    return files

  def names(self) -> list[str]:
    return sorted(self._files)

  def __contains__(self, name: str) -> bool:
    return name in self._files

  def file_of(self, name: str) -> pathlib.Path:
    return self._files[name]

  def get(self, name: str) -> np.ndarray:
    """The tensor `name`, in its stored dtype.

    Raises:
      HFWeightsError: If no file of the checkpoint holds it.
    """
    if name not in self._files:
      raise HFWeightsError(f"{self.description}: tensor {name!r} is missing")
    path = self._files[name]
    with _open(path) as f:
      try:
        return f.get_tensor(name)
      except Exception as error:  # safetensors' own error type is private.
        raise HFWeightsError(
          f"{path}: tensor {name!r} is unreadable ({error})"
        ) from error


def _open(path: pathlib.Path):
  """`safe_open` with an error that names the file (e.g. a truncated shard).

  Raises:
    HFWeightsError: If `path` is not a readable safetensors file.
  """
  try:
    return safe_open(path, framework="np")
  except Exception as error:  # safetensors' own error type is private.
    raise HFWeightsError(
      f"{path}: not a readable safetensors file ({error})"
    ) from error


def _set(tree: dict[str, Any], path: tuple[str, ...], value: np.ndarray):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def load_params(
  source: TensorSource,
  mappings: Iterable[TensorMapping],
  expected: Mapping[str, Any],
) -> dict[str, Any]:
  """Reads, checks and arranges the tensors into the port's parameter tree.

  Args:
    source: The checkpoint's tensors.
    mappings: Every parameter of the port, with its HF name.
    expected: The port's parameters as `jax.ShapeDtypeStruct`s (or anything
      with `.shape`), nested like the tree to build.

  Returns:
    A nested dict of float32 numpy arrays, shaped like `expected`.

  Raises:
    HFWeightsError: If a tensor is missing, or its shape is not the one the
      config implies.
  """
  params: dict[str, Any] = {}
  for mapping in mappings:
    tensor = source.get(mapping.hf_name)
    want = tuple(_get(expected, mapping.flax_path).shape)
    want_hf = want[::-1] if mapping.transpose else want
    if tuple(tensor.shape) != want_hf:
      raise HFWeightsError(
        f"{source.file_of(mapping.hf_name)}: tensor {mapping.hf_name!r} has "
        f"shape {tuple(tensor.shape)}, but config.json implies {want_hf}"
      )
    value = tensor.T if mapping.transpose else tensor
    _set(params, mapping.flax_path, np.ascontiguousarray(value, np.float32))
  return params


def linear(
  hf_module: str, flax_path: tuple[str, ...], *, bias: bool
) -> list[TensorMapping]:
  """A torch `nn.Linear` ([out, in] weight) as an `nn.Dense`."""
  found = [TensorMapping(f"{hf_module}.weight", (*flax_path, "kernel"), True)]
  if bias:
    found.append(TensorMapping(f"{hf_module}.bias", (*flax_path, "bias")))
  return found


def conv1d(hf_module: str, flax_path: tuple[str, ...]) -> list[TensorMapping]:
  """GPT-2's `Conv1D` (weight already [in, out]) as an `nn.Dense`."""
  return [
    TensorMapping(f"{hf_module}.weight", (*flax_path, "kernel")),
    TensorMapping(f"{hf_module}.bias", (*flax_path, "bias")),
  ]


def norm(
  hf_module: str, flax_path: tuple[str, ...], *, bias: bool = True
) -> list[TensorMapping]:
  """A LayerNorm (weight, bias) or RMSNorm (weight) as its Flax module."""
  found = [TensorMapping(f"{hf_module}.weight", (*flax_path, "scale"))]
  if bias:
    found.append(TensorMapping(f"{hf_module}.bias", (*flax_path, "bias")))
  return found


def embedding(hf_module: str, flax_path: tuple[str, ...]) -> TensorMapping:
  """A torch `nn.Embedding` ([num, features]) as an `nn.Embed`."""
  return TensorMapping(f"{hf_module}.weight", (*flax_path, "embedding"))
