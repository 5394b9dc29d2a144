"""The query file of the jobs that encode queries (Hessian, retrieve, score).

A query longer than the model's `max_len` does not stop the job: it is left
out and named, with why, in the job's `rejected.jsonl`, as the encode job
does with corpus examples.
"""

from absl import logging

from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import store as store_lib


def fitting(
  queries: list[data_lib.Query], tokenizer, *, max_len: int
) -> tuple[list[data_lib.Query], list[store_lib.Rejection]]:
  """The queries whose prompt and target fit in `max_len` tokens, and a
  rejection for each of the others."""
  kept, rejected = [], []
  for query in queries:
    try:
      data_lib.tokenize_query(
        tokenizer, query.prompt, query.target, max_len=max_len
      )
    except data_lib.TooLongError as error:
      rejected.append(store_lib.Rejection(query.id, f"too long: {error}"))
    else:
      kept.append(query)
  return kept, rejected


def read(
  path: str, checkpoint: str
) -> tuple[list[data_lib.Query], list[store_lib.Rejection]]:
  """The queries of `path` that the checkpoint's model can encode, and the
  rejections of the others.

  Raises:
    data.MalformedInputError: On a line that is not a valid query.
  """
  header = checkpoint_lib.read_header(checkpoint)
  kept, rejected = fitting(
    data_lib.read_queries(path), header.tokenizer, max_len=header.max_len
  )
  if rejected:
    logging.warning(
      "%d of %d queries in %s are too long for the model (max_len=%d): "
      "see rejected.jsonl",
      len(rejected),
      len(kept) + len(rejected),
      path,
      header.max_len,
    )
  return kept, rejected


def write_rejected(
  output_dir: str, rejected: list[store_lib.Rejection]
) -> None:
  """`<output_dir>/rejected.jsonl` (empty when nothing was rejected)."""
  store_lib.write_rejected(output_dir, [r.to_dict() for r in rejected])
