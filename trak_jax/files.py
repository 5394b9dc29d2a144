"""File I/O on local disk or any filesystem TensorFlow knows (gs://, ...).

At scale every job reads and writes `gs://` paths; tests use `ram://`, TF's
in-memory filesystem. A path with a scheme (`scheme://...`) goes through
`tf.io.gfile`; any other path through Python's own `open` and `os`, exactly
as if this module were not there. TensorFlow is imported only when a remote
path is used, so importing this module stays cheap.

Remote errors are raised as Python's: `FileNotFoundError` for a missing
file, `OSError` for any other failure, so callers catch one kind for both.
"""

import builtins
import contextlib
import errno
import glob as glob_lib
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from trak_jax import tf_import


def is_local(path: str | os.PathLike) -> bool:
  """Whether `path` is on local disk (has no `scheme://`)."""
  return "://" not in os.fspath(path)


def abspath(path: str) -> str:
  """`os.path.abspath` for local paths; remote paths are returned as is."""
  return os.path.abspath(path) if is_local(path) else path


def _gfile():
  # Heavy: only remote paths need it.
  return tf_import.tensorflow().io.gfile


def _as_os_error(call: Callable[..., Any], *args, path: str) -> Any:
  """Runs a `tf.io.gfile` call, raising Python's errors for TF's."""
  tf = tf_import.tensorflow()
  try:
    return call(*args)
  except tf.errors.NotFoundError as error:
    raise FileNotFoundError(errno.ENOENT, error.message, path) from None
  except tf.errors.OpError as error:
    raise OSError(f"{path}: {error.message}") from None


class _RemoteFile:
  """A `tf.io.gfile.GFile` whose errors are Python's (see module doc)."""

  def __init__(self, path: str, mode: str):
    self._path = path
    self._file = _gfile().GFile(path, mode)
    if "w" in mode or "a" in mode:
      # GFile creates the file at its first write: create (or truncate) it
      # now, as Python's open does, so that an empty file still exists.
      self.write(b"" if "b" in mode else "")

  def _call(self, method: str, *args) -> Any:
    return _as_os_error(getattr(self._file, method), *args, path=self._path)

  def read(self, size: int = -1):
    return self._call("read", size)

  def readline(self):
    return self._call("readline")

  def write(self, data) -> None:
    self._call("write", data)

  def writelines(self, lines) -> None:
    for line in lines:
      self.write(line)

  def close(self) -> None:
    self._call("close")

  def __iter__(self) -> "_RemoteFile":
    return self

  def __next__(self):
    line = self.readline()
    if not line:
      raise StopIteration
    return line

  def __enter__(self) -> "_RemoteFile":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def open(path: str | os.PathLike, mode: str = "r", **kwargs) -> IO[Any]:
  """Opens a file for reading or writing, local or remote.

  Args:
    path: The file.
    mode: "r", "w" or "a", with "b" for bytes. Remote text is UTF-8.
    **kwargs: Passed to Python's `open` for local paths (`encoding`,
      `newline`); remote files are UTF-8 with "\\n" line ends anyway.
  """
  path = os.fspath(path)
  if is_local(path):
    return builtins.open(path, mode, **kwargs)
  return _RemoteFile(path, mode)


def exists(path: str) -> bool:
  if is_local(path):
    return os.path.exists(path)
  return _as_os_error(_gfile().exists, path, path=path)


def makedirs(path: str) -> None:
  """Creates a directory and its parents; no error if it exists."""
  if is_local(path):
    os.makedirs(path, exist_ok=True)
  else:
    _as_os_error(_gfile().makedirs, path, path=path)


def replace(source: str, destination: str) -> None:
  """Renames `source` to `destination`, overwriting it.

  Atomic on local disk (`os.replace`); on object stores such as GCS a
  rename is a copy and a delete, so readers should check a marker or a
  checksum written after the data.
  """
  if is_local(source) and is_local(destination):
    os.replace(source, destination)
  else:
    _as_os_error(
      lambda: _gfile().rename(source, destination, overwrite=True),
      path=source,
    )


def remove(path: str) -> None:
  """Deletes the file `path`; no error if it does not exist."""
  if not exists(path):
    return
  if is_local(path):
    os.remove(path)
  else:
    _as_os_error(_gfile().remove, path, path=path)


def temporary_name(path: str) -> str:
  """A unique name beside `path` to write to, then `replace` onto it."""
  # The pid alone is not unique on a shared bucket: workers on two hosts
  # (a retry beside a straggler) can have the same one.
  return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def sha256(path: str) -> str:
  """The hex sha256 of a file's bytes, read in blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def write_json(path: str, value: Any) -> None:
  """Writes `value` as JSON to a temporary name, then renames it to `path`."""
  temporary = temporary_name(path)
  with open(temporary, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  replace(temporary, path)


# A job's output directory holds this marker, written last, once the job
# has finished writing; a rerun removes it before writing anything else.
COMPLETED = "COMPLETED"


class UnfinishedError(FileNotFoundError):
  """A job's output directory without its `COMPLETED` marker."""


def write_marker(directory: str, text: str | None = None) -> str:
  """Writes `COMPLETED` in `directory` atomically; returns its text.

  Args:
    directory: A job's output directory, its other files written.
    text: The marker's content (default: the UTC time).
  """
  if text is None:
    text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
  final = os.path.join(directory, COMPLETED)
  temporary = temporary_name(final)
  with open(temporary, "w") as f:
    f.write(text + "\n")
  replace(temporary, final)
  return text


def remove_marker(directory: str) -> None:
  """Removes `COMPLETED` from `directory` (a rerun, before it writes)."""
  remove(os.path.join(directory, COMPLETED))


def check_marker(directory: str, *, job: str) -> None:
  """Raises `UnfinishedError` if `directory` has no `COMPLETED` marker.

  Args:
    directory: A job's output directory.
    job: The job that writes it ("hessian", "index"), for the message.
  """
  if not exists(os.path.join(directory, COMPLETED)):
    raise UnfinishedError(
      f"{directory}: no {COMPLETED} marker: the {job} job did not finish "
      f"writing it (or it was written before jobs wrote markers); rerun the "
      f"{job} job"
    )


def isdir(path: str) -> bool:
  if is_local(path):
    return os.path.isdir(path)
  return _as_os_error(_gfile().isdir, path, path=path)


def listdir(path: str) -> list[str]:
  """Names in directory `path` (no trailing slashes), sorted."""
  if is_local(path):
    return sorted(os.listdir(path))
  names = _as_os_error(_gfile().listdir, path, path=path)
  return sorted(name.rstrip("/") for name in names)


def glob(pattern: str) -> list[str]:
  """The paths matching `pattern`, sorted."""
  if is_local(pattern):
    return sorted(glob_lib.glob(pattern))
  return sorted(_as_os_error(_gfile().glob, pattern, path=pattern))


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def write_bytes(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)


# NumPy's writers seek and tell, which not every remote filesystem's
# writable file supports (`ram://` does not): remote arrays are written
# through an in-memory buffer.


def save_npy(path: str, array: np.ndarray) -> None:
  """`np.save` to `path` (no ".npy" is appended)."""
  if is_local(path):
    with builtins.open(path, "wb") as f:
      np.save(f, array)
    return
  buffer = io.BytesIO()
  np.save(buffer, array)
  write_bytes(path, buffer.getvalue())


def load_npy(path: str) -> np.ndarray:
  if is_local(path):
    return np.load(path)
  return np.load(io.BytesIO(read_bytes(path)))


def save_npz(path: str, **arrays: np.ndarray) -> None:
  """`np.savez` to `path` (no ".npz" is appended)."""
  if is_local(path):
    with builtins.open(path, "wb") as f:
      np.savez(f, **arrays)
    return
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def load_npz(path: str) -> Iterator[Any]:
  """`np.load` of an `.npz` file: arrays are read when indexed."""
  if is_local(path):
    with np.load(path) as arrays:
      yield arrays
    return
  # Reading seeks and tells, which remote files opened for reading support.
  with _gfile().GFile(path, "rb") as f, np.load(f) as arrays:
    yield arrays


def copy_tree(source: str, destination: str) -> None:
  """Copies the files under directory `source` into `destination`.

  Either side may be local or remote; existing files are overwritten.
  """
  gfile = _gfile()
  for directory, _, names in gfile.walk(source):
    relative = os.path.relpath(directory, source)
    target = (
      destination if relative == "." else os.path.join(destination, relative)
    )
    makedirs(target)
    for name in names:
      _as_os_error(
        lambda d=directory, n=name, t=target: gfile.copy(
          os.path.join(d, n), os.path.join(t, n), overwrite=True
        ),
        path=os.path.join(directory, name),
      )


@contextlib.contextmanager
def local_directory_to_write(directory: str) -> Iterator[str]:
  """A local directory whose files end up in `directory`.

  For tools that only write to local disk (ScaNN's `serialize`): a local
  `directory` is created and given as is; a remote one is a temporary
  directory, copied up when the block exits without an error.
  """
  if is_local(directory):
    makedirs(directory)
    yield directory
    return
  with tempfile.TemporaryDirectory() as local:
    yield local
    copy_tree(local, directory)


@contextlib.contextmanager
def local_directory_to_read(directory: str) -> Iterator[str]:
  """A local directory holding the files of `directory`.

  For tools that only read local disk (ScaNN's `load_searcher`): a local
  `directory` is given as is; a remote one is copied down to a temporary
  directory, removed when the block exits.
  """
  if is_local(directory):
    yield directory
    return
  local = tempfile.mkdtemp()
  try:
    copy_tree(directory, local)
    yield local
  finally:
    shutil.rmtree(local, ignore_errors=True)
