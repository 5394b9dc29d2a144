"""The retrieval job as every process of a multi-process JAX job, no Beam.

Each process reads every query and runs the same batches in the same order
(`retrieve_lib.SearchQueries`): the model answers and encodes them on one
device of its own (jit refuses host batches with sharded layouts in a
multi-process job), and the sharded exact indexes lie on one global mesh
over the devices of all processes (`mesh_search.load_index`), searched as
one SPMD program that every process joins. After a barrier process 0 alone
reads the proponents' texts and writes report.jsonl, metrics.json and
report.html (`retrieve_lib.write_outputs`).
"""

from typing import Any

import apache_beam as beam
import jax

from pipelines import retrieve_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import distributed, partitioning


class _Searcher(retrieve_lib.SearchQueries):
  """SearchQueries with the model on this process's first device."""

  def setup(self):
    mesh = partitioning.make_mesh(devices=jax.local_devices()[:1])
    self._loaded = checkpoint_lib.load_checkpoint(
      self._options.checkpoint, mesh=mesh
    )
    self._methods = self.load_methods(self._loaded)


def search(options: retrieve_lib.RetrieveOptions) -> list[tuple[str, dict]]:
  """(query id, partial report record) of every query, on every process."""
  queries = retrieve_lib.read_queries(
    options.queries,
    options.checkpoint,
    options.output_dir if jax.process_index() == 0 else None,
  )
  searcher = _Searcher(options)
  searcher.setup()
  partials = []
  for start in range(0, len(queries), options.batch_size):
    for output in searcher.process(queries[start : start + options.batch_size]):
      if isinstance(output, beam.pvalue.TaggedOutput):  # Not with "mesh".
        raise RuntimeError("a sharded index was left to shard work items")
      partials.append(output)
  return partials


def _texts(corpus: str, needed: set[str]) -> dict[str, str]:
  """{example id: text} of the `needed` ids in the corpus."""
  texts = {}
  for source in data_lib.expand_sources(corpus):
    for location, raw in data_lib.raw_corpus_records(source):
      for example_id, text in retrieve_lib._parse_text((location, raw)):
        if example_id in needed:
          texts[example_id] = text
  return texts


def run(options: retrieve_lib.RetrieveOptions) -> dict[str, Any] | None:
  """Runs the job as this process; metrics.json's content on process 0.

  Every process of the job calls it with the same options.

  Returns:
    metrics.json's content on process 0, None on the others.

  Raises:
    ValueError: If `options.search` is not "mesh".
  """
  if options.search != "mesh":
    raise ValueError(
      f"a multi-process retrieval needs search='mesh', not {options.search!r}"
    )
  partials = search(options)
  distributed.barrier("retrieve_searched")
  if jax.process_index() != 0:
    return None
  needed = {
    example_id
    for _, partial in partials
    for ranked in partial["ranked"].values()
    for example_id, _ in ranked
  }
  texts = _texts(options.corpus, needed)
  records = [retrieve_lib.assemble(partial, texts) for _, partial in partials]
  return retrieve_lib.write_outputs(
    records,
    output_dir=options.output_dir,
    k=options.k,
    search={**options.search_settings(), "processes": jax.process_count()},
  )
