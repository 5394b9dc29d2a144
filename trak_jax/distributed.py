"""Several JAX processes, one program: start-up and the data they share.

A multi-host job runs one process per host. Every process runs the same
jitted programs on one global mesh; each feeds the rows of the batch that
live on its own devices and reads back the same rows of the result.

Processes join only when asked: `--distributed` on a binary, or
`TRAK_JAX_DISTRIBUTED=1` in the environment (what `tpu_launch` sets). On a
TPU VM slice `jax.distributed.initialize()` finds the coordinator and the
process index by itself; elsewhere pass them (or set
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`). On CPU
the processes talk through gloo, JAX's default CPU collectives.
"""

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from trak_jax import partitioning

ENV = "TRAK_JAX_DISTRIBUTED"


def requested(flag: bool | None = None) -> bool:
  """Whether to join a multi-process job: `flag` if set, else `ENV`=1."""
  if flag is not None:
    return flag
  return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


def initialize(
  *,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """`jax.distributed.initialize`, reading the JAX_* variables as fallback.

  Call it before anything else touches a JAX device.
  """
  env = os.environ
  if coordinator_address is None:
    coordinator_address = env.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and "JAX_NUM_PROCESSES" in env:
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and "JAX_PROCESS_ID" in env:
    process_id = int(env["JAX_PROCESS_ID"])
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
  )


def owned(items: Sequence[Any]) -> list[Any]:
  """This process's slice of `items`: every process_count-th, from its index.

  The slices of all processes are disjoint and together are `items`.
  """
  return list(items[jax.process_index() :: jax.process_count()])


def _rows(mesh: Mesh, tree: Any) -> Any:
  """Partition specs of row-sharded arrays (`partitioning.batch_sharding`)."""
  return jax.tree.map(
    lambda x: partitioning.batch_sharding(mesh, np.ndim(x)).spec, tree
  )


def global_rows(mesh: Mesh, local: Any) -> Any:
  """Global arrays whose rows on this process's devices are `local`'s.

  Every process passes the same number of rows; the global batch has
  process_count times as many, sharded over the mesh's `data` axis.
  """
  if jax.process_count() == 1:
    return local
  return multihost_utils.host_local_array_to_global_array(
    local, mesh, _rows(mesh, local)
  )


def local_rows(mesh: Mesh, tree: Any) -> Any:
  """The rows of row-sharded global arrays that live on this process, as
  numpy arrays (the inverse of `global_rows`)."""
  if jax.process_count() > 1:
    tree = multihost_utils.global_array_to_host_local_array(
      tree, mesh, _rows(mesh, tree)
    )
  return jax.tree.map(np.asarray, tree)


def any_process(flag: bool) -> bool:
  """True if `flag` is true on any process (every process must call it)."""
  if jax.process_count() == 1:
    return flag
  flags = multihost_utils.process_allgather(np.asarray(flag, np.int32))
  return bool(np.any(flags))


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier called `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
