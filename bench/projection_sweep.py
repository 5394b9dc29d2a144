r"""How much of the exact ranking each projection layout keeps.

  python bench/projection_sweep.py --checkpoint=out/demo/model \
    --corpus=out/demo/data/corpus.jsonl --queries=out/demo/data/queries.jsonl

1. The exact reference: whole corrected per-example gradients (no
   projection), their inner products per parameter block between every query
   and every passage, and each block's share of the gradients' energy.
2. Each layout in `--layouts` through the real encoder (no Hessian, unit
   norm, exact search): MRR and Recall@10 against `relevant_ids`, the top-10
   overlap with the exact ranking, the Spearman correlation of its scores
   against exact ones, the error of its inner products (RMS of
   projected − exact cosines, over all pairs), and that error's mean square
   over what a dense Gaussian projection with the same dims per block gives
   (`error_over_dense`: Σ_b E[q_b² z_b²] / k_b for unit q, z).

A layout is `allocation:d[:basis[:r]]`, r the Kronecker sketches per matrix
(`ProjectionSpec.kronecker_terms`, default the spec's); the basis of the
Kronecker sides is `random` (the encoder's, default), `pca` (each side the
top eigenvectors of Σ G Gᵀ resp. Σ GᵀG over a corpus sample's unit-norm
corrected gradients: a data-dependent truncation) or `half` (half the dims
those eigenvectors, half Gaussian on their complement).

Prints one JSON object; `--cache` keeps stage 1 between runs.
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from pipelines import encode_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import projection as projection_lib
from trak_jax.eval import metrics as metrics_lib

_CHECKPOINT = flags.DEFINE_string("checkpoint", "out/demo/model", "Model.")
_CORPUS = flags.DEFINE_string(
  "corpus", "out/demo/data/corpus.jsonl", "Corpus JSONL."
)
_QUERIES = flags.DEFINE_string(
  "queries", "out/demo/data/queries.jsonl", "Query JSONL."
)
_CORRECTION = flags.DEFINE_string("correction", "adafactor", "Correction.")
_LAYOUTS = flags.DEFINE_list(
  "layouts",
  ["equal:4096", "energy:4096", "energy:16384", "energy:65536"],
  "allocation:d pairs to run through the encoder.",
)
_CACHE = flags.DEFINE_string("cache", None, "npz file caching stage 1.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples per call.")
_BASIS_SAMPLE = flags.DEFINE_integer(
  "basis_sample", 256, "Corpus examples the pca/half bases are fitted on."
)


def _corpus_batches(loaded, corpus):
  tokenized = encode_lib.tokenize_examples(
    loaded.tokenizer,
    corpus,
    max_len=loaded.model_config.max_len,
    truncate=True,
    rejected=[],
  )
  return tokenized, list(
    encode_lib.make_batches(
      tokenized,
      batch_size=_BATCH.value,
      max_len=loaded.model_config.max_len,
      length_buckets=(16, 32, 48),
    )
  )


def whole_gradient_encoder(loaded):
  """Corrected, unprojected, unnormalised gradients: [examples, P]."""
  config = encoder_lib.preset(
    "trackstar_no_hessian",
    correction=_CORRECTION.value,
    projection=projection_lib.ProjectionSpec(kind="none"),
  )
  config = encoder_lib.dataclasses.replace(config, normalize=False)
  return encoder_lib.from_checkpoint(loaded, config)


def exact_blocks(loaded, corpus, queries):
  """Per-block exact Grams [blocks, queries, corpus] and squared norms."""
  encoder = whole_gradient_encoder(loaded)
  blocks = encoder.layout.blocks
  query_side = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=_BATCH.value,
    max_len=loaded.model_config.max_len,
    finished=False,
  ).features  # [queries, P]
  tokenized, batches = _corpus_batches(loaded, corpus)
  grams = np.zeros((len(blocks), len(queries), len(tokenized)), np.float32)
  corpus_sq = np.zeros((len(blocks), len(tokenized)), np.float32)
  for step, planned in enumerate(batches):
    phi = np.asarray(encoder.features(planned.batch).features)
    rows = list(planned.rows)
    phi = phi[: len(rows)]
    for b, block in enumerate(blocks):
      part = phi[:, block.offset : block.offset + block.size]
      grams[b][:, rows] = (
        query_side[:, block.offset : block.offset + block.size] @ part.T
      )
      corpus_sq[b, rows] = (part**2).sum(-1)
    if step % 20 == 0:
      print(f"exact: batch {step + 1}/{len(batches)}", flush=True)
  query_sq = np.stack(
    [(query_side[:, b.offset : b.offset + b.size] ** 2).sum(-1) for b in blocks]
  )
  names = ["/".join(b.path) for b in blocks]
  ids = [t.id for t in tokenized]
  return names, ids, grams, query_sq, corpus_sq


def rankings(scores, ids, k=10):
  order = np.argsort(-scores, axis=1)[:, :k]
  return [[ids[j] for j in row] for row in order]


def spearman(a, b):
  """Mean over rows of the Spearman correlation of a[i] and b[i]."""
  ra = np.argsort(np.argsort(a, axis=1), axis=1).astype(np.float64)
  rb = np.argsort(np.argsort(b, axis=1), axis=1).astype(np.float64)
  ra -= ra.mean(1, keepdims=True)
  rb -= rb.mean(1, keepdims=True)
  return float(
    np.mean((ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1)))
  )


def compare(scores, exact, ids, queries):
  relevant = [q.relevant_ids for q in queries]
  ranked = rankings(scores, ids)
  exact_ranked = rankings(exact, ids)
  values = metrics_lib.per_query(ranked, relevant, k=10)
  overlap = np.mean(
    [
      len(set(a) & set(b)) / 10
      for a, b in zip(ranked, exact_ranked, strict=True)
    ]
  )
  return {
    "mrr": float(values["mrr"].mean()),
    "recall@10": float(values["recall@10"].mean()),
    "top10_overlap_with_exact": float(overlap),
    "spearman_with_exact": spearman(scores, exact),
    "rms_error": float(np.sqrt(np.mean((scores - exact) ** 2))),
    "rms_exact": float(np.sqrt(np.mean(exact**2))),
  }


def dense_error(layout, names, query_sq, corpus_sq):
  """Mean squared cosine error of a dense Gaussian projection with the
  layout's dims per block: Σ_b E[q_b² z_b²] / k_b for unit q, z."""
  query_share = query_sq / query_sq.sum(0)  # [blocks, queries]
  corpus_share = corpus_sq / corpus_sq.sum(0)  # [blocks, corpus]
  total = 0.0
  for block in layout.blocks:
    b = names.index(projection_lib.block_name(block.path))
    total += query_share[b].mean() * corpus_share[b].mean() / block.size
  return float(total)


def side_covariances(loaded, corpus):
  """Per matrix, Σ G Gᵀ and Σ GᵀG over a seeded sample's unit-norm G."""
  encoder = whole_gradient_encoder(loaded)
  rng = np.random.default_rng(0)
  size = min(_BASIS_SAMPLE.value, len(corpus))
  sample = [corpus[i] for i in np.sort(rng.choice(len(corpus), size, False))]
  left, right = {}, {}
  for planned in _corpus_batches(loaded, sample)[1]:
    phi = np.array(encoder.features(planned.batch).features)
    phi = phi[: len(planned.rows)]
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    for block in encoder.layout.blocks:
      if block.path == projection_lib.VECTORS:
        continue
      grads = phi[:, block.offset : block.offset + block.size].reshape(
        -1, *block.in_shape
      )
      left[block.path] = left.get(block.path, 0) + np.einsum(
        "bij,bkj->ik", grads, grads
      )
      right[block.path] = right.get(block.path, 0) + np.einsum(
        "bij,bik->jk", grads, grads
      )
  return left, right


def data_bases(encoder, covariances, basis):
  """The encoder's matrices with `pca` or `half` Kronecker sides."""
  rng = np.random.default_rng(1)
  sides = [dict(encoder.matrices.left), dict(encoder.matrices.right)]
  for block in encoder.layout.blocks:
    if block.path == projection_lib.VECTORS:
      continue
    for side, k in enumerate(block.out_shape):
      cov = covariances[side][block.path]
      if k >= cov.shape[0]:
        continue  # kept whole (identity) either way
      vectors = np.linalg.eigh(cov)[1][:, ::-1]
      top = k if basis == "pca" else k // 2
      rows = [vectors[:, :top].T]
      if top < k:
        gaussian = rng.standard_normal((k - top, cov.shape[0] - top))
        rows.append(gaussian / np.sqrt(k - top) @ vectors[:, top:].T)
      sides[side][block.path] = jax.numpy.asarray(
        np.concatenate(rows), jax.numpy.float32
      )
  return projection_lib.Matrices(sides[0], sides[1], encoder.matrices.dense)


def projected_scores(loaded, corpus, queries, spec, ids, bases=None):
  config = encoder_lib.preset(
    "trackstar_no_hessian", correction=_CORRECTION.value, projection=spec
  )
  start = time.perf_counter()
  encoder = encoder_lib.from_checkpoint(loaded, config)
  if bases is not None:
    covariances, basis = bases
    encoder.matrices = data_bases(encoder, covariances, basis)
  query_side = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=_BATCH.value,
    max_len=loaded.model_config.max_len,
  ).features
  tokenized, batches = _corpus_batches(loaded, corpus)
  assert [t.id for t in tokenized] == ids
  corpus_side = np.zeros((len(ids), encoder.dim), np.float32)
  for planned in batches:
    out = np.asarray(encoder.encode(planned.batch).features)
    corpus_side[list(planned.rows)] = out[: len(planned.rows)]
  seconds = time.perf_counter() - start
  return query_side @ corpus_side.T, encoder, seconds


def main(argv):
  del argv
  jax.config.update("jax_default_matmul_precision", "highest")
  loaded = checkpoint_lib.load_checkpoint(_CHECKPOINT.value)
  corpus = list(data_lib.read_corpus(_CORPUS.value, skip_malformed=True))
  queries = data_lib.read_queries(_QUERIES.value)
  if _CACHE.value and os.path.exists(_CACHE.value):
    with np.load(_CACHE.value) as f:
      names, ids = list(f["names"]), list(f["ids"])
      grams, query_sq, corpus_sq = f["grams"], f["query_sq"], f["corpus_sq"]
  else:
    start = time.perf_counter()
    names, ids, grams, query_sq, corpus_sq = exact_blocks(
      loaded, corpus, queries
    )
    print(f"exact: {time.perf_counter() - start:.0f} s", flush=True)
    if _CACHE.value:
      np.savez(
        _CACHE.value,
        names=names,
        ids=ids,
        grams=grams,
        query_sq=query_sq,
        corpus_sq=corpus_sq,
      )
  norms = np.sqrt(query_sq.sum(0))[:, None] * np.sqrt(corpus_sq.sum(0))[None]
  exact = grams.sum(0) / norms
  result = {
    "queries": len(queries),
    "corpus": len(ids),
    "exact": compare(exact, exact, ids, queries),
    "energy": {
      name: {
        "query_share": float(np.mean(query_sq[b] / query_sq.sum(0))),
        "corpus_share": float(np.mean(corpus_sq[b] / corpus_sq.sum(0))),
      }
      for b, name in enumerate(names)
    },
    "layouts": {},
  }
  covariances = None
  for item in _LAYOUTS.value:
    allocation, dim, basis, terms = (item.split(":") + ["random", ""])[:4]
    if basis not in ("random", "pca", "half"):
      raise app.UsageError(f"layout {item!r}: unknown basis {basis!r}")
    if basis != "random" and terms not in ("", "1"):
      raise app.UsageError(f"layout {item!r}: a {basis} basis needs r = 1")
    if basis != "random" and covariances is None:
      covariances = side_covariances(loaded, corpus)
    spec = projection_lib.ProjectionSpec(
      dim=int(dim),
      allocation=allocation,
      kronecker_terms=int(
        terms or projection_lib.ProjectionSpec.kronecker_terms
      ),
      block_energy=tuple(
        (name, shares["corpus_share"])
        for name, shares in result["energy"].items()
      ),
    )
    scores, encoder, seconds = projected_scores(
      loaded,
      corpus,
      queries,
      spec,
      ids,
      bases=None if basis == "random" else (covariances, basis),
    )
    row = compare(scores, exact, ids, queries)
    row["error_over_dense"] = row["rms_error"] ** 2 / dense_error(
      encoder.layout, names, query_sq, corpus_sq
    )
    row["seconds"] = seconds
    row["dims"] = {
      "/".join(b.path): list(b.out_shape) for b in encoder.layout.blocks
    }
    result["layouts"][item] = row
    print(item, json.dumps({k: v for k, v in row.items() if k != "dims"}))
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
