"""Beam job: batch retrieval of queries into a browsable report.

    queries -> batches -> encode (per method, finished with its Hessian)
            -> search each method's index -> model's own answer
    proponents' texts (the needed ids a side input of the corpus's filter)
    -> report.jsonl, metrics.json (MRR, Recall and Precision at k), report.html

Each index directory says which encoder config and Hessian it was built
with, so one job can retrieve with several methods and show them side by
side.

A sharded exact index is never loaded whole: every index shard is a work
item that scores all of its method's encoded queries (a side input) with
exact top-k, and the partial top-k are merged per (query, method) by
`MergeTopK`: the same ids and scores as exact search over the whole index.
A "scann_sharded" index is searched the same way, each shard with its own
ScaNN searcher (the Recall@10 its index.json records per shard).
With `search="mesh"` each worker that encodes queries instead streams the
sharded indexes onto its device mesh (`mesh_search.load_index`, each
device one block of rows) and searches them there as one SPMD program:
the same ids and scores, with no shard work items. A ScaNN (or unsharded)
index is loaded by each worker and searched there. With
`approx_recall_target` the mesh picks candidates with
`jax.lax.approx_max_k` at that recall target (approximate on TPU, exact on
CPU); metrics.json's "search" records how the job searched.
"""

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines import encode_lib
from pipelines import queries as queries_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files, mesh_search, partitioning, predict, report
from trak_jax import index as index_core
from trak_jax.eval import metrics as metrics_lib

NAMESPACE = "trak_jax.retrieve"


@dataclasses.dataclass(frozen=True)
class RetrieveOptions:
  """Inputs and outputs of the retrieval job.

  Attributes:
    queries: Query JSONL.
    checkpoint: The model's checkpoint.
    corpus: The corpus spec (for proponent texts).
    indexes: (method name, index directory) pairs.
    output_dir: Receives report.jsonl, metrics.json, report.html.
    k: Proponents per query and method.
    batch_size: Queries per encoder call.
    search: How sharded exact indexes are searched: "beam" (every index
      shard a work item, partial top-k merged by `MergeTopK`) or "mesh"
      (each worker that encodes queries loads them onto all of its devices
      and searches there, `mesh_search`; run one such worker per host).
    approx_recall_target: With search="mesh", search the sharded exact
      indexes with `jax.lax.approx_max_k` at this recall target, in (0, 1];
      None: exact top-k.
  """

  queries: str
  checkpoint: str
  corpus: str
  indexes: tuple[tuple[str, str], ...]
  output_dir: str
  k: int = 10
  batch_size: int = 32
  search: str = "beam"
  approx_recall_target: float | None = None

  def __post_init__(self):
    if self.search not in SEARCHES:
      raise ValueError(
        f"search={self.search!r} is not one of {', '.join(SEARCHES)}"
      )
    target = self.approx_recall_target
    if target is None:
      return
    if self.search != "mesh":
      raise ValueError(
        f"approx_recall_target={target!r} needs search='mesh' (approx_max_k "
        f"runs on the mesh), not search={self.search!r}"
      )
    if not 0 < target <= 1:
      raise ValueError(f"approx_recall_target={target!r} is not in (0, 1]")

  def search_settings(self) -> dict[str, Any]:
    """metrics.json's "search": how the sharded exact indexes were searched."""
    approx = self.approx_recall_target is not None
    return {
      "mode": self.search,
      "approx": approx,
      "recall_target": self.approx_recall_target,
    }


SEARCHES = ("beam", "mesh")  # RetrieveOptions.search


def load_encoder(loaded, index_dir: str):
  """(finishing encoder, index.json) of one index directory.

  Reads no vectors: what a sharded index's queries need.

  Raises:
    FileNotFoundError: If `index_dir` holds no index.
    encoder.FingerprintMismatchError: If the index was built from another
      checkpoint or encoder than the query encoder.
    index.HessianMismatchError: If the index's Hessian was refitted after
      the index was built (queries would be finished with another R^(-1/2)).
  """
  info = index_core.load_info(index_dir)
  config = encoder_lib.EncoderConfig.from_dict(info["encoder_config"])
  preconditioner = None
  if config.hessian.kind != "none":
    preconditioner = index_core.load_hessian(info, index_dir=index_dir)
  encoder = encoder_lib.from_checkpoint(
    loaded, config, preconditioner=preconditioner
  )
  encoder.fingerprint.check_matches(
    encoder_lib.Fingerprint.from_dict(info["store_fingerprint"]),
    what=f"index {index_dir}",
  )
  return encoder, info


def load_method(loaded, index_dir: str):
  """(finishing encoder, index) of one index directory, loaded whole.

  Raises:
    As `load_encoder`, and index.IndexShardError naming a corrupted shard.
  """
  encoder, _ = load_encoder(loaded, index_dir)
  return encoder, index_core.Index.load(index_dir)


ENCODED = "encoded"  # SearchQueries' output of query batches, sharded methods


class SearchQueries(beam.DoFn):
  """A batch of queries -> (query id, partial report record).

  Methods with a whole index are searched here (their proponents are in the
  record's "ranked"); for each method with a sharded index, the batch's
  finished encodings go to the ENCODED output as (method, query ids,
  [batch, d] float32), to be scored shard by shard.
  """

  def __init__(self, options: RetrieveOptions):
    self._options = options
    self._searched = Metrics.counter(NAMESPACE, "queries_searched")

  def setup(self):
    from trak_jax import checkpoint as checkpoint_lib

    self._loaded = checkpoint_lib.load_checkpoint(self._options.checkpoint)
    self._methods = self.load_methods(self._loaded)

  def load_methods(self, loaded) -> dict[str, tuple[Any, Any]]:
    """{method: (finishing encoder, whole index or index on the mesh, or
    None if its encodings are scored elsewhere, shard by shard)} of the
    options' indexes."""
    methods, mesh = {}, None
    for name, index_dir in self._options.indexes:
      encoder, info = load_encoder(loaded, index_dir)
      index = None
      if not index_core.is_sharded(info):
        index = index_core.Index.load(index_dir)
      elif self._options.search == "mesh":
        mesh = mesh or partitioning.make_mesh()
        index = mesh_search.load_index(index_dir, mesh=mesh)
      methods[name] = (encoder, index)
    return methods

  def _search_options(self, index) -> dict[str, Any]:
    """approx_max_k's options for an index on the mesh, else none."""
    target = self._options.approx_recall_target
    if target is None or not isinstance(index, mesh_search.MeshCorpus):
      return {}
    return {"approx": True, "recall_target": target}

  def process(self, queries) -> Iterator[Any]:
    queries = list(queries)
    loaded = self._loaded
    answers = predict.answer_queries(
      loaded.params, loaded.model_config, loaded.tokenizer, queries
    )
    results = {}
    for name, (encoder, index) in self._methods.items():
      encoded = encoder_lib.encode_queries(
        encoder,
        loaded.tokenizer,
        queries,
        batch_size=self._options.batch_size,
        max_len=loaded.max_len,
      )
      if index is None:
        features = np.asarray(encoded.features, np.float32)
        ids = [q.id for q in queries]
        yield beam.pvalue.TaggedOutput(ENCODED, (name, ids, features))
      else:
        results[name] = index.search(
          encoded.features, k=self._options.k, **self._search_options(index)
        )
    for row, query in enumerate(queries):
      self._searched.inc()
      yield (
        query.id,
        {
          "query": query,
          "prediction": answers.predictions[row],
          "correct": bool(answers.correct[row]),
          "ranked": {
            name: list(
              zip(found.ids[row], found.scores[row].tolist(), strict=True)
            )
            for name, found in results.items()
          },
        },
      )


class ScoreShard(beam.DoFn):
  """(method, index dir, shard number) -> ((query id, method), partial top-k)
  for every query of that method in the side input of encoded batches.

  Holds one index shard at a time; an empty shard gives empty partials.
  """

  def __init__(self, k: int):
    self._k = k
    self._scored = Metrics.counter(NAMESPACE, "index_shards_scored")

  def setup(self):
    self._infos = {}

  def _search(self, index_dir: str, number: int):
    """The shard's search: ScaNN's where the index has a searcher per
    shard, else exact."""
    info = self._infos[index_dir]
    shard = index_core.read_shard(index_dir, info, number)
    if info["kind"] != index_core.SCANN_SHARDED:
      return lambda queries: index_core.search_shard(shard, queries, k=self._k)
    searcher = index_core.load_shard_searcher(index_dir, info, number)
    return lambda queries: index_core.search_shard_scann(
      searcher, shard, queries, k=self._k
    )

  def process(
    self, work: tuple[str, str, int], encoded_batches
  ) -> Iterator[tuple[tuple[str, str], index_core.Ranked]]:
    method, index_dir, number = work
    if index_dir not in self._infos:
      self._infos[index_dir] = index_core.load_info(index_dir)
    search_shard = self._search(index_dir, number)
    for name, query_ids, features in encoded_batches:
      if name != method:
        continue
      partials = search_shard(features)
      for query_id, partial in zip(query_ids, partials, strict=True):
        yield (query_id, method), partial
    self._scored.inc()


class MergeTopK(beam.CombineFn):
  """Partial top-k lists of one (query, method) -> its top-k.

  Any grouping and order of the partials gives the same result
  (`index.merge_top_k` orders by score, then id).
  """

  def __init__(self, k: int):
    self._k = k

  def create_accumulator(self) -> index_core.Ranked:
    return []

  def add_input(self, accumulator, partial) -> index_core.Ranked:
    return index_core.merge_top_k([accumulator, partial], k=self._k)

  def merge_accumulators(self, accumulators) -> index_core.Ranked:
    return index_core.merge_top_k(accumulators, k=self._k)

  def extract_output(self, accumulator) -> index_core.Ranked:
    return accumulator


def _with_sharded(element, *, methods: tuple[str, ...]):
  """(query id, {partial, sharded}) -> (query id, partial record) whose
  "ranked" holds every method, in the job's order."""
  query_id, grouped = element
  partial = list(grouped["partial"])[0]
  ranked = {**partial["ranked"], **dict(grouped["sharded"])}
  return query_id, {
    **partial,
    "ranked": {name: list(ranked.get(name, [])) for name in methods},
  }


def _shard_work(options: RetrieveOptions) -> list[tuple[str, str, int]] | None:
  """(method, index dir, shard number) of every sharded index's shards, or
  None if no index is sharded (or sharded ones are searched on the mesh)."""
  if options.search == "mesh":
    return None
  work, sharded = [], False
  for name, index_dir in options.indexes:
    info = index_core.load_info(index_dir)
    if index_core.is_sharded(info):
      sharded = True
      work.extend((name, index_dir, i) for i in range(len(info["shards"])))
  return work if sharded else None


class MergeSharded(beam.PTransform):
  """{"partial": (query id, partial record), "sharded": ((query id, method),
  partial top-k)} -> (query id, partial record whose "ranked" holds every
  method), the partial top-k of each (query, method) merged by `MergeTopK`.
  """

  def __init__(self, *, k: int, methods: tuple[str, ...]):
    super().__init__()
    self._k = k
    self._methods = methods

  def expand(self, inputs):
    sharded = (
      inputs["sharded"]
      | "MergeTopK" >> beam.CombinePerKey(MergeTopK(self._k))
      | "ByQuery" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
    )
    return (
      {"partial": inputs["partial"], "sharded": sharded}
      | "JoinShards" >> beam.CoGroupByKey()
      | "AllMethods" >> beam.Map(_with_sharded, methods=self._methods)
    )


def read_queries(
  path: str, checkpoint: str, output_dir: str | None
) -> list[data_lib.Query]:
  """The queries the model can encode; the others are written, with why,
  to `<output_dir>/rejected.jsonl` (when `output_dir` is given)."""
  queries, rejected = queries_lib.read(path, checkpoint)
  if output_dir is not None:
    files.makedirs(output_dir)
    queries_lib.write_rejected(output_dir, rejected)
  if not queries:
    raise ValueError(f"no query of {path} fits the model's max_len")
  return queries


def search(pipeline: beam.Pipeline, options: RetrieveOptions):
  """Queries -> (query id, partial report record with every method's
  ranked proponents); sharded indexes are scored shard by shard. Queries
  too long for the model go to rejected.jsonl, named by id."""
  queries = read_queries(
    options.queries, options.checkpoint, options.output_dir
  )
  searched = (
    pipeline
    | "Queries" >> beam.Create(queries)
    | "Batch"
    >> beam.BatchElements(
      min_batch_size=options.batch_size, max_batch_size=options.batch_size
    )
    | "Search"
    >> beam.ParDo(SearchQueries(options)).with_outputs(ENCODED, main="partial")
  )
  work = _shard_work(options)
  if work is None:
    return searched.partial
  sharded = (
    pipeline
    | "IndexShards" >> beam.Create(work)
    | "Spread" >> beam.Reshuffle()
    | "ScoreShards"
    >> beam.ParDo(ScoreShard(options.k), beam.pvalue.AsIter(searched[ENCODED]))
  )
  return {"partial": searched.partial, "sharded": sharded} | MergeSharded(
    k=options.k, methods=tuple(name for name, _ in options.indexes)
  )


def assemble(partial: dict[str, Any], texts: dict[str, str]) -> dict:
  """A report.jsonl record from search results and proponent texts."""
  query: data_lib.Query = partial["query"]
  relevant = set(query.relevant_ids)
  results = {}
  for method, ranked in partial["ranked"].items():
    ids = [example_id for example_id, _ in ranked]
    results[method] = {
      "reciprocal_rank": metrics_lib.reciprocal_rank(ids, relevant),
      "proponents": [
        {
          "rank": rank,
          "id": example_id,
          "score": float(score),
          "text": texts.get(example_id, ""),
          "relevant": example_id in relevant,
        }
        for rank, (example_id, score) in enumerate(ranked, start=1)
      ],
    }
  extra = query.extra
  return {
    "query_id": query.id,
    "prompt": query.prompt,
    "target": query.target,
    "prediction": partial["prediction"],
    "correct": partial["correct"],
    "frequency_bucket": extra.get("frequency_bucket"),
    "relation": extra.get("relation"),
    "subject": extra.get("subject"),
    "object": extra.get("object"),
    "relevant_ids": list(query.relevant_ids),
    "results": results,
  }


def retrieval_metrics(
  records: list[dict], *, k: int = metrics_lib.K
) -> dict[str, Any]:
  """metrics.json: MRR@k, Recall@k and Precision@k per method (mean, 95%
  interval, n) over the queries that have relevant ids."""
  graded = [r for r in records if r["relevant_ids"]]
  methods = list(records[0]["results"]) if records else []
  table = metrics_lib.ranking_table(graded, methods, k=k)
  return {
    "queries": len(records),
    "graded_queries": len(graded),
    **metrics_lib.summarize(table)["all"],
    "model_accuracy": float(
      np.mean([r["correct"] for r in records]) if records else float("nan")
    ),
  }


def write_outputs(
  records: list[dict],
  *,
  output_dir: str,
  k: int = metrics_lib.K,
  search: dict[str, Any] | None = None,
) -> dict:
  """Writes report.jsonl, metrics.json (`retrieval_metrics`, with `search`,
  the job's search settings, under "search" if given) and report.html;
  returns metrics.json's content."""
  records = sorted(records, key=lambda r: r["query_id"])
  files.makedirs(output_dir)
  report.write_report_jsonl(records, os.path.join(output_dir, "report.jsonl"))
  summary = retrieval_metrics(records, k=k)
  if search is not None:
    summary["search"] = search
  with files.open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  report.write_report_html(
    records,
    os.path.join(output_dir, "report.html"),
    title="trak_jax retrieval report",
    k=k,
  )
  return summary


def _parse_text(element):
  location, raw = element
  try:
    example = data_lib.parse_raw(location, raw)
  except data_lib.MalformedInputError:
    return []
  return [(example.id, example.text)]


class WriteReport(beam.PTransform):
  """{"searched": (query id, partial record with every method's ranked
  proponents), "texts": (example id, text)} -> report.jsonl, metrics.json
  and report.html in `output_dir`; outputs metrics.json's content, its
  metrics at `k` and `search` (the job's search settings) if given."""

  def __init__(
    self,
    output_dir: str,
    *,
    k: int = metrics_lib.K,
    search: dict[str, Any] | None = None,
  ):
    super().__init__()
    self._output_dir = output_dir
    self._k = k
    self._search = search

  def expand(self, inputs):
    searched = inputs["searched"]
    # Only the proponents' texts travel: the needed ids are a side input of
    # the corpus's filter, the texts found a side input of the assembly.
    needed = (
      searched
      | "Needed"
      >> beam.FlatMap(
        lambda kv: [
          (example_id, None)
          for ranked in kv[1]["ranked"].values()
          for example_id, _ in ranked
        ]
      )
      | "OncePerId" >> beam.Distinct()
    )
    texts = (
      inputs["texts"]
      | "NeededTexts"
      >> beam.Filter(
        lambda kv, ids: kv[0] in ids, ids=beam.pvalue.AsDict(needed)
      )
      | "OneTextPerId" >> beam.CombinePerKey(min)
    )
    return (
      searched
      | "Assemble"
      >> beam.Map(
        lambda kv, texts: assemble(kv[1], texts),
        texts=beam.pvalue.AsDict(texts),
      )
      | "Collect" >> beam.combiners.ToList()
      | "Write"
      >> beam.Map(
        write_outputs,
        output_dir=self._output_dir,
        k=self._k,
        search=self._search,
      )
    )


def run_pipeline(pipeline: beam.Pipeline, *, options: RetrieveOptions) -> dict:
  """Builds and runs the job; returns metrics.json's content."""
  searched = search(pipeline, options)
  corpus = (
    pipeline
    | "Sources" >> beam.Create(data_lib.expand_sources(options.corpus))
    | "Read" >> beam.ParDo(encode_lib.ReadSource())
    | "ParseTexts" >> beam.FlatMap(_parse_text)
  )
  _ = {"searched": searched, "texts": corpus} | WriteReport(
    options.output_dir, k=options.k, search=options.search_settings()
  )
  pipeline.run().wait_until_finish()
  with files.open(os.path.join(options.output_dir, "metrics.json")) as f:
    return json.load(f)
