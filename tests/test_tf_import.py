"""TensorFlow's CUDA probe is quiet on a CPU machine, and only there."""

import glob
import subprocess
import sys
import textwrap

import pytest

from trak_jax import tf_import


def test_the_probe_is_kept_where_a_gpu_is_asked_for_or_present():
  assert not tf_import.gpu_wanted({}, [])
  assert not tf_import.gpu_wanted({"JAX_PLATFORMS": "cpu"}, [])
  assert tf_import.gpu_wanted({"JAX_PLATFORMS": "cuda,cpu"}, [])
  assert tf_import.gpu_wanted({"JAX_PLATFORMS": "GPU"}, [])
  assert tf_import.gpu_wanted({}, ["/dev/nvidia0"])


# Writes and reads a TFRecord (the ops that probe CUDA), then writes a line
# of its own to stderr.
_SCRIPT = textwrap.dedent(
  """
  import os, sys
  from trak_jax import tf_import
  tf = tf_import.tensorflow()
  path = os.path.join(sys.argv[1], "x.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(b"record")
  assert list(tf.data.TFRecordDataset(path).as_numpy_iterator()) == [b"record"]
  print("after the probe", file=sys.stderr, flush=True)
  """
)


@pytest.mark.skipif(
  bool(glob.glob("/dev/nvidia*")), reason="this machine has an NVIDIA device"
)
def test_no_cuinit_line_on_a_machine_without_a_gpu(tmp_path):
  env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
  result = subprocess.run(
    [sys.executable, "-c", _SCRIPT, str(tmp_path)],
    capture_output=True,
    text=True,
    env=env,
    check=True,
  )
  assert "cuInit" not in result.stderr
  # Stderr works again after the probe: the script's own line is there.
  assert "after the probe" in result.stderr
