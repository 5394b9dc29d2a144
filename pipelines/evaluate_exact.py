"""The rows computed in process: the exact reference, BM25, agreement.

The exact reference (`EXACT`) ranks the corpus by whole corrected
gradients; each gradient method's top-10 overlap with it and the Spearman
correlation of its scores with the exact ones measure what the projection
loses. `SCANN` (TrackStar's store and Hessian searched through ScaNN) is
measured against TrackStar's exact search (`RECALL_VS_EXACT_SEARCH`). BM25
(`add_bm25`) is the other reference row that needs no gradients.
"""

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines import encode_lib, evaluate_steps, retrieve_lib
from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import files
from trak_jax import index as index_core
from trak_jax.eval import bm25 as bm25_lib
from trak_jax.eval import exact as exact_lib
from trak_jax.eval import metrics as metrics_lib

BM25 = "bm25"
EXACT = "exact"
TRACKSTAR = "trackstar"
# TrackStar's store and Hessian, searched through ScaNN instead of exactly.
SCANN = "trackstar_scann"
RECALL_VS_EXACT_SEARCH = "recall@10_vs_exact_search"


def add_bm25(
  records: list[dict], corpus: dict[str, str], queries, *, k: int
) -> None:
  """Adds BM25's proponents (queries = prompt + target) to each record."""
  ids = sorted(corpus)
  index = bm25_lib.Bm25Index.build(ids, [corpus[i] for i in ids])
  by_id = {q.id: q for q in queries}
  found_ids, scores = index.search_queries(
    [by_id[r["query_id"]] for r in records], k=k
  )
  for record, ranked, row in zip(records, found_ids, scores, strict=True):
    relevant = set(record["relevant_ids"])
    record["results"][BM25] = {
      "reciprocal_rank": metrics_lib.reciprocal_rank(ranked, relevant),
      "proponents": [
        {
          "rank": rank,
          "id": pid,
          "score": float(score),
          "text": corpus[pid],
          "relevant": pid in relevant,
        }
        for rank, (pid, score) in enumerate(
          zip(ranked, row, strict=True), start=1
        )
      ],
    }


def score_distribution(options, configs, indexes, loaded, queries, method):
  """Scores of relevant vs other passages for `method` (all pairs)."""
  index = retrieve_lib.load_method(loaded, indexes[method])
  encoder, built = index
  encoded = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=options.batch_size,
    max_len=loaded.max_len,
  )
  scores = encoded.features @ built.vectors.T  # [queries, corpus]
  position = {example_id: i for i, example_id in enumerate(built.ids)}
  relevant = np.zeros_like(scores, bool)
  for row, query in enumerate(queries):
    for example_id in query.relevant_ids:
      if example_id in position:
        relevant[row, position[example_id]] = True
  return scores[relevant], scores[~relevant]


def _corpus_batches(loaded, corpus: dict[str, str], options):
  examples = [data_lib.CorpusExample(i, t) for i, t in sorted(corpus.items())]
  max_len = loaded.max_len
  tokenized = encode_lib.tokenize_examples(
    loaded.tokenizer, examples, max_len=max_len, truncate=True, rejected=[]
  )
  return [
    ([tokenized[i].id for i in planned.rows], planned.batch)
    for planned in encode_lib.make_batches(
      tokenized,
      batch_size=options.batch_size,
      max_len=max_len,
      length_buckets=encode_lib.EncodeOptions.length_buckets,
    )
  ]


def method_scores(loaded, index_dir, queries, options) -> tuple:
  """A method's [queries, corpus] scores over its whole index, and ids."""
  encoder, built = retrieve_lib.load_method(loaded, index_dir)
  encoded = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=options.batch_size,
    max_len=loaded.max_len,
  )
  return encoded.features @ built.vectors.T, list(built.ids)


def _index_correction(index_dir: str) -> correction_lib.CorrectionSpec:
  info = index_core.load_info(index_dir)
  return correction_lib.CorrectionSpec(**info["encoder_config"]["correction"])


def add_exact(
  records, corpus, queries, loaded, options, indexes, steps, *, correction
):
  """Adds the exact reference's proponents to each record; returns, per
  gradient method, its per-query top-10 overlap with the exact ranking and
  the Spearman correlation of its scores with the exact ones, and a note
  if the exact reference could not run.

  `correction` is the methods' correction ("adam", "adafactor",
  "estimated"); for "estimated", the V the stores saved is read back.

  ScaNN (`SCANN`) returns only its top k: its overlap comes from the
  proponents it retrieved; a Spearman correlation over the whole corpus is
  not defined for it, so it has none."""
  if correction == "estimated":  # The V the stores saved and recorded.
    correction = next(
      dataclasses.replace(recorded, factored=False)
      for name in indexes
      if (recorded := _index_correction(indexes[name])).kind == "estimated"
    )
  by_id = {q.id: q for q in queries}
  ordered = [by_id[r["query_id"]] for r in records]
  cached = steps.path(EXACT, ".npz")
  computed = {}

  def exact_job():
    evaluate_steps.log("exact reference (whole gradients)")
    computed["exact"] = exact_lib.exact_scores(
      loaded,
      correction=correction,
      corpus_batches=_corpus_batches(loaded, corpus, options),
      queries=ordered,
      batch_size=options.batch_size,
      max_params=options.exact_max_params,
      progress=evaluate_steps.log,
    )
    files.save_npz(
      cached,
      scores=computed["exact"].scores,
      ids=np.asarray(computed["exact"].ids, dtype=str),
    )

  inputs = (
    options.checkpoint,
    options.corpus,
    [q.id for q in ordered],
    repr(correction),
    options.exact_max_params,
    loaded.digest,
  )
  try:
    steps.run(EXACT, inputs, exact_job)
  except exact_lib.TooLargeError as error:
    evaluate_steps.log(f"no exact reference: {error}")
    return {}, str(error)
  exact = computed.get("exact")
  if exact is None:  # Finished before: read what it computed.
    with files.load_npz(cached) as arrays:
      exact = exact_lib.ExactScores(
        scores=arrays["scores"], ids=[str(i) for i in arrays["ids"]]
      )
  top = exact_lib.top_k(exact.scores, exact.ids, k=options.k)
  for record, (ranked, scores) in zip(records, top, strict=True):
    relevant = set(record["relevant_ids"])
    record["results"][EXACT] = {
      "reciprocal_rank": metrics_lib.reciprocal_rank(ranked, relevant),
      "proponents": [
        {
          "rank": rank,
          "id": pid,
          "score": float(score),
          "text": corpus[pid],
          "relevant": pid in relevant,
        }
        for rank, (pid, score) in enumerate(
          zip(ranked, scores, strict=True), start=1
        )
      ],
    }
  agreement = {EXACT: _agreement(exact.scores, exact.scores, top, top)}
  column = {example_id: j for j, example_id in enumerate(exact.ids)}
  for name, index_dir in indexes.items():
    if name == SCANN:
      agreement[name] = {"overlap@10_exact": _retrieved_overlap(records, top)}
      continue
    scores, ids = method_scores(loaded, index_dir, ordered, options)
    aligned = np.zeros_like(exact.scores)
    aligned[:, [column[i] for i in ids]] = scores
    mine = exact_lib.top_k(aligned, exact.ids, k=options.k)
    agreement[name] = _agreement(aligned, exact.scores, mine, top)
  return agreement, None


def _retrieved_overlap(records, exact_ranked) -> np.ndarray:
  return np.array(
    [
      exact_lib.overlap_at_k(_ranked(record, SCANN), exact[0], k=10)
      for record, exact in zip(records, exact_ranked, strict=True)
    ]
  )


def _ranked(record: dict, method: str) -> list[str]:
  return [p["id"] for p in record["results"][method]["proponents"]]


def recall_vs_exact_search(
  found: Sequence[str], exact: Sequence[str], *, k: int = 10
) -> float:
  """The share of exact search's top k that an approximate top k contains
  (NaN if exact search found nothing)."""
  reference = set(exact[:k])
  if not reference:
    return float("nan")
  return len(set(found[:k]) & reference) / len(reference)


def scann_recall(records: list[dict]) -> dict[str, dict[str, np.ndarray]]:
  """Per query, the share of TrackStar's exact-search top 10 found by its
  ScaNN top 10 (`SCANN`), and by itself (1.0: the reference row)."""
  return {
    method: {
      RECALL_VS_EXACT_SEARCH: np.array(
        [
          recall_vs_exact_search(
            _ranked(record, method), _ranked(record, TRACKSTAR)
          )
          for record in records
        ]
      )
    }
    for method in (TRACKSTAR, SCANN)
  }


def scann_summary(indexes: dict[str, str]) -> dict[str, Any] | None:
  """ScaNN's settings and its index job's Recall@10 (stored examples as
  queries), from index.json; None without a ScaNN index."""
  if SCANN not in indexes:
    return None
  with files.open(os.path.join(indexes[SCANN], index_core.INFO)) as f:
    info = json.load(f)
  return {
    "settings": info["scann"],
    "recall_at_10": (info.get("recall_at_10") or {}).get("recall"),
  }


def _agreement(scores, exact, ranked, exact_ranked) -> dict[str, np.ndarray]:
  return {
    "overlap@10_exact": np.array(
      [
        exact_lib.overlap_at_k(a[0], b[0], k=10)
        for a, b in zip(ranked, exact_ranked, strict=True)
      ]
    ),
    "spearman_exact": exact_lib.spearman(scores, exact),
  }
