r"""How each Hessian setting ranks, against the exact reference.

  python bench/hessian_sweep.py --checkpoint=out/demo/model \
    --corpus=out/demo/data/corpus.jsonl --queries=out/demo/data/queries.jsonl \
    --cache=/tmp/exact.npz --dims=4096,16384

For each d: the default projection layout (energies measured as the encode
job measures them), the corpus and query φ, then R fitted in process for
each setting in `SETTINGS` (and no R), applied to both sides, normalised,
exact search. Prints per setting MRR, Recall@10, top-10 overlap with the
exact (unprojected, no R) ranking, λ, k, the mean Ledoit-Wolf shrinkage and
the warnings, as one JSON object. The exact reference comes from
`projection_sweep.py`'s cache (it is computed if the cache is missing).
"""

import dataclasses
import json
import os
import time
import warnings

import jax
import numpy as np
import projection_sweep as sweep
from absl import app, flags

from pipelines import encode_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import hessian as hessian_core
from trak_jax import projection as projection_lib

_DIMS = flags.DEFINE_list("dims", ["4096", "16384"], "Projection dims d.")
_TERMS = flags.DEFINE_integer(
  "kronecker_terms",
  projection_lib.ProjectionSpec.kronecker_terms,
  "Kronecker sketches per matrix (ProjectionSpec.kronecker_terms).",
)
_SETTINGS = flags.DEFINE_list(
  "settings", None, "Names from SETTINGS to run (default: all)."
)
_OLD = hessian_core.HessianSpec(
  block_diagonal=False, shrinkage="none", train_sample=2048
)
SETTINGS = {
  "default": hessian_core.HessianSpec(),
  "all_eval_directions": hessian_core.HessianSpec(eval_directions="all"),
  "no_shrinkage": hessian_core.HessianSpec(shrinkage="none"),
  "train_only": hessian_core.HessianSpec(kind="train"),
  "mix_0.9": hessian_core.HessianSpec(mix=0.9),
  "mix_0.99": hessian_core.HessianSpec(mix=0.99),
  "old_default": _OLD,
}


def features(loaded, config, corpus, queries):
  """Unnormalised φ of the corpus and the queries, corpus ids."""
  config = dataclasses.replace(
    config,
    hessian=dataclasses.replace(config.hessian, kind="none"),
    normalize=False,
  )
  encoder = encoder_lib.from_checkpoint(loaded, config)
  query_side = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=sweep._BATCH.value,
    max_len=loaded.model_config.max_len,
    finished=False,
  ).features
  tokenized, batches = sweep._corpus_batches(loaded, corpus)
  corpus_side = np.zeros((len(tokenized), encoder.dim), np.float32)
  for planned in batches:
    out = np.asarray(encoder.features(planned.batch).features)
    corpus_side[list(planned.rows)] = out[: len(planned.rows)]
  return corpus_side, query_side, [t.id for t in tokenized], encoder.layout


def fit(spec, corpus_side, query_side, layout):
  rng = np.random.default_rng(spec.seed)
  sample = min(spec.train_sample_size(corpus_side.shape[1]), len(corpus_side))
  rows = np.sort(rng.choice(len(corpus_side), sample, replace=False))
  sizes = hessian_core.block_sizes(
    corpus_side.shape[1],
    [b.size for b in layout.blocks],
    spec,
    train_examples=sample,
  )
  train = hessian_core.Autocorrelation(sizes)
  for start in range(0, len(rows), 256):
    train.update(corpus_side[rows[start : start + 256]])
  evaluation = hessian_core.Autocorrelation(sizes)
  evaluation.update(query_side)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fitted = hessian_core.fit(spec, train, evaluation)
  return fitted, sizes


def finish(phi, preconditioner):
  out = np.asarray(
    encoder_lib.finish(phi, preconditioner, normalize=True), np.float32
  )
  return out


def main(argv):
  del argv
  jax.config.update("jax_default_matmul_precision", "highest")
  loaded = checkpoint_lib.load_checkpoint(sweep._CHECKPOINT.value)
  corpus = list(data_lib.read_corpus(sweep._CORPUS.value, skip_malformed=True))
  queries = data_lib.read_queries(sweep._QUERIES.value)
  if not (sweep._CACHE.value and os.path.exists(sweep._CACHE.value)):
    raise SystemExit("run projection_sweep.py with --cache first")
  with np.load(sweep._CACHE.value) as f:
    exact_ids = list(f["ids"])
    grams, query_sq, corpus_sq = f["grams"], f["query_sq"], f["corpus_sq"]
  norms = np.sqrt(query_sq.sum(0))[:, None] * np.sqrt(corpus_sq.sum(0))[None]
  exact = grams.sum(0) / norms
  result = {"exact": sweep.compare(exact, exact, exact_ids, queries)}
  for dim in map(int, _DIMS.value):
    config = encoder_lib.preset(
      "trackstar",
      correction=sweep._CORRECTION.value,
      projection=projection_lib.ProjectionSpec(
        dim=dim, kronecker_terms=_TERMS.value
      ),
    )
    options = encode_lib.EncodeOptions(
      corpus=sweep._CORPUS.value,
      checkpoint=sweep._CHECKPOINT.value,
      output_dir="/nonexistent",
      encoder_config=config,
      energy_queries=sweep._QUERIES.value,
    )
    config = encode_lib.measure_layout(options).encoder_config
    corpus_side, query_side, ids, layout = features(
      loaded, config, corpus, queries
    )
    assert ids == exact_ids
    rows = {}
    plain = finish(query_side, None) @ finish(corpus_side, None).T
    rows["no_hessian"] = sweep.compare(plain, exact, ids, queries)
    print(dim, "no_hessian", json.dumps(rows["no_hessian"]), flush=True)
    for name, spec in SETTINGS.items():
      if _SETTINGS.value and name not in _SETTINGS.value:
        continue
      if spec.block_diagonal is False and dim > hessian_core.MAX_FULL_DIM:
        continue
      start = time.perf_counter()
      fitted, sizes = fit(spec, corpus_side, query_side, layout)
      scores = (
        finish(query_side, fitted.preconditioner)
        @ finish(corpus_side, fitted.preconditioner).T
      )
      row = sweep.compare(scores, exact, ids, queries)
      row.update(
        mix=fitted.mix,
        eigen_k=fitted.eigen_k,
        blocks=len(sizes),
        largest_block=max(sizes),
        shrinkage=float(np.mean(fitted.diagnostics["shrinkage"] or [0.0])),
        warnings=fitted.diagnostics["warnings"],
        seconds=time.perf_counter() - start,
      )
      rows[name] = row
      print(dim, name, json.dumps(row), flush=True)
    result[f"d={layout.dim}"] = rows
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
