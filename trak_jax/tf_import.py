"""TensorFlow, imported once, with its CUDA probe quiet on a CPU machine.

The project uses TensorFlow only for I/O (TFRecords, `tf.io.gfile`), never
for compute. Its first eager op probes CUDA, and on a machine without an
NVIDIA device that probe prints an `E ... failed call to cuInit` line to
stderr in every job. `tensorflow()` runs the probe once with stderr sent to
/dev/null, unless a GPU could be there (an NVIDIA device node exists) or the
user asked for one (`JAX_PLATFORMS` names cuda or gpu): then the probe's
output is kept, since a failure there is news. TensorFlow's later messages
are untouched (unlike `TF_CPP_MIN_LOG_LEVEL=3`, which hides all its errors
for the rest of the process). The probe holds a lock, so threads (Beam's
DirectRunner has several) redirect stderr once; what another thread writes
to stderr during the probe is lost.
"""

import contextlib
import glob
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

_GPU_PLATFORMS = ("cuda", "gpu", "rocm")
_probed = False
_probe_lock = threading.Lock()


def gpu_wanted(
  environ: dict[str, str] | None = None,
  device_nodes: list[str] | None = None,
) -> bool:
  """Whether the CUDA probe's output is kept.

  Args:
    environ: The environment (default `os.environ`).
    device_nodes: The NVIDIA device nodes (default: `/dev/nvidia*`).
  """
  environ = os.environ if environ is None else environ
  if device_nodes is None:
    device_nodes = glob.glob("/dev/nvidia*")
  platforms = environ.get("JAX_PLATFORMS", "").lower()
  asked = any(name in platforms for name in _GPU_PLATFORMS)
  return asked or bool(device_nodes)


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
  """Sends file descriptor 2 (C++ logging included) to /dev/null."""
  sys.stderr.flush()
  saved = os.dup(2)
  null = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(null, 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


def tensorflow() -> Any:
  """The `tensorflow` module, its device probe run (quietly if no GPU)."""
  global _probed
  import tensorflow as tf  # Heavy: imported on first use only.

  if _probed:  # Per record in the store's writer: no lock once probed.
    return tf
  with _probe_lock:
    if not _probed:
      quiet = contextlib.nullcontext() if gpu_wanted() else _stderr_to_devnull()
      with quiet:
        tf.config.list_physical_devices("GPU")
      _probed = True
  return tf
