"""Launch scripts: TPU VMs (create, set up, run a stage, logs, delete) and
Beam jobs on Dataflow, Flink or Spark.

Every script prints the exact commands it would run with `--dry_run`; see
`tpu_launch/README.md`.
"""
