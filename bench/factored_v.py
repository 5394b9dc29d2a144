r"""How much of the elementwise-V ranking the factored V keeps.

  python bench/factored_v.py [--work_dir=out/factored_v] [--train_steps=1500]
  python bench/factored_v.py --checkpoint=DIR --corpus=C.jsonl \
    --queries=Q.jsonl

What is measured. One AdamW checkpoint's corpus and queries are encoded
with each correction twice, with V elementwise and factored
(`CorrectionSpec.factored`: per captured weight matrix, V ≈ outer(v_row,
v_col) / mean(v_row) from its row and column means), through the
`trackstar_no_hessian` encoder (unit norm, no R), so that only V differs.
Each query ranks the whole corpus by cosine (exact search). Per correction
(`adam`: the checkpoint's `nu`; `estimated`: the mean squared gradient of
a seeded sample of `--sample` corpus examples) and projection (`none`:
whole gradients, the approximation alone; `energy:d` or `equal:d`: the
Kronecker projection, its dims split by block energies measured on the same
sample with each form's own correction, as the encode job does, or
equally):

- overlap@10: mean over queries of |top-10 factored ∩ top-10 elementwise|
  / 10, and its minimum over queries;
- spearman: the rank correlation of the two score rows over the corpus,
  mean over queries;
- mrr, recall@10: of each form against the queries' `relevant_ids`;
- seed_overlap@10 (Kronecker only): the same overlap between two projection
  seeds of the elementwise V, the projection's own noise on that ranking,
  the scale the approximation's change is read against.

Without --checkpoint the FactBench demo data is generated and the demo
model (gin/models/gpt2_demo.gin's shape) is trained with AdamW for
--train_steps under --work_dir; both are reused when they exist. Prints one
JSON object.
"""

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from pipelines import encode_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import model as model_lib
from trak_jax import optimizer as optimizer_lib
from trak_jax import projection as projection_lib
from trak_jax import train as train_lib
from trak_jax.eval import factbench
from trak_jax.eval import metrics as metrics_lib

_WORK_DIR = flags.DEFINE_string(
  "work_dir", "out/factored_v", "Data and model, when not given."
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "An AdamW model.")
_CORPUS = flags.DEFINE_string("corpus", None, "Corpus JSONL.")
_QUERIES = flags.DEFINE_string("queries", None, "Query JSONL.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 1500, "AdamW steps.")
_CORRECTIONS = flags.DEFINE_list(
  "corrections", ["adam", "estimated"], "Corrections with an elementwise V."
)
_PROJECTIONS = flags.DEFINE_list(
  "projections",
  ["none", "energy:16384"],
  "none, or allocation:d (allocation equal or energy) of a Kronecker one.",
)
_SAMPLE = flags.DEFINE_integer(
  "sample", 256, "Corpus examples V is estimated and energies measured on."
)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples per encoder call.")

DEMO_MODEL = model_lib.ModelConfig(
  vocab_size=2048, d_model=128, num_layers=4, num_heads=4, d_ff=512, max_len=64
)


def data_and_checkpoint() -> tuple[str, str, str]:
  """(corpus, queries, checkpoint): given, or the demo's, trained here."""
  if _CHECKPOINT.value:
    return _CORPUS.value, _QUERIES.value, _CHECKPOINT.value
  data_dir = os.path.join(_WORK_DIR.value, "data")
  corpus, queries = (
    os.path.join(data_dir, f"{name}.jsonl") for name in ("corpus", "queries")
  )
  if not os.path.exists(queries):
    bench = factbench.generate(factbench.FactBenchConfig.demo())
    factbench.write_jsonl(bench, data_dir)
  steps = _TRAIN_STEPS.value
  result = train_lib.train(
    corpus_path=corpus,
    output_dir=os.path.join(_WORK_DIR.value, "model"),
    model_config=DEMO_MODEL,
    optimizer_config=optimizer_lib.OptimizerConfig(
      name="adamw", learning_rate=5e-3, total_steps=steps
    ),
    train_config=train_lib.TrainConfig(
      num_steps=steps, batch_size=32, seq_len=64, checkpoint_every=steps
    ),
  )
  return corpus, queries, result.output_dir


def corpus_batches(loaded, examples) -> list[tuple[list[str], data_lib.Batch]]:
  """(ids of the filled rows, padded batch) pairs, as the encode job pads."""
  max_len = loaded.model_config.max_len
  tokenized = encode_lib.tokenize_examples(
    loaded.tokenizer, examples, max_len=max_len, truncate=True, rejected=[]
  )
  return [
    ([tokenized[i].id for i in planned.rows], planned.batch)
    for planned in encode_lib.make_batches(
      tokenized,
      batch_size=_BATCH.value,
      max_len=max_len,
      length_buckets=encode_lib.EncodeOptions.length_buckets,
    )
  ]


def elementwise_v(loaded, kind: str, sample_batches):
  """(spec, elementwise correction) of `kind`, computed once; an estimated
  V is saved under --work_dir, so that energy probes load it."""
  spec = correction_lib.CorrectionSpec(kind=kind)
  if kind != "estimated":
    fix = correction_lib.from_checkpoint(spec, loaded.opt_state, loaded.params)
    return spec, fix
  fix = encoder_lib.estimated_correction(loaded, spec, sample_batches)
  path = os.path.join(_WORK_DIR.value, "second_moments.npz")
  os.makedirs(_WORK_DIR.value, exist_ok=True)
  digest = correction_lib.save_estimate(fix, path)
  spec = dataclasses.replace(spec, estimate_path=path, estimate_digest=digest)
  return spec, fix


def projection_spec(name: str, *, seed: int) -> projection_lib.ProjectionSpec:
  """ "none", or "allocation:d" with allocation "equal" or "energy"."""
  if name == "none":
    return projection_lib.ProjectionSpec(kind="none")
  allocation, dim = name.split(":")
  return projection_lib.ProjectionSpec(
    kind="kronecker", dim=int(dim), allocation=allocation, seed=seed
  )


def make_encoder(loaded, spec, fix, *, factored, projection, sample_batches):
  """The encoder of `spec` (factored or not); an energy layout is measured
  on `sample_batches` with its own correction, as the encode job does."""
  config = dataclasses.replace(
    encoder_lib.preset(
      "trackstar_no_hessian", correction=spec.kind, projection=projection
    ),
    correction=dataclasses.replace(spec, factored=factored),
  )
  if config.projection.needs_energy:
    shares = encoder_lib.block_shares(loaded, config, sample_batches)
    config = encoder_lib.with_block_energy(config, shares)
  return encoder_lib.TrackStarEncoder(
    params=loaded.params,
    apply_fn=model_lib.apply_fn(loaded.model_config),
    config=config,
    correction=fix,
    checkpoint_digest=loaded.digest,
    mesh=jax.tree.leaves(loaded.params)[0].sharding.mesh,
  )


def scores(encoder, loaded, queries, batches) -> np.ndarray:
  """[queries, corpus] cosines, the corpus streamed batch by batch."""
  query_side = encoder_lib.encode_queries(
    encoder,
    loaded.tokenizer,
    queries,
    batch_size=_BATCH.value,
    max_len=loaded.model_config.max_len,
  ).features  # [queries, d], unit rows
  parts = []
  for ids, batch in batches:
    corpus_side = np.asarray(encoder.encode(batch).features)[: len(ids)]
    parts.append(query_side @ corpus_side.T)  # [queries, rows]
  return np.concatenate(parts, axis=1)


def top_ids(score_rows: np.ndarray, ids: list[str], k: int = 10):
  order = np.argsort(-score_rows, axis=1, kind="stable")[:, :k]
  return [[ids[j] for j in row] for row in order]


def overlaps(a, b, k: int = 10) -> np.ndarray:
  """Per query, |top k of a ∩ top k of b| / k."""
  pairs = zip(a, b, strict=True)
  return np.array([len(set(x[:k]) & set(y[:k])) / k for x, y in pairs])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over rows of the Spearman correlation of a[i] and b[i]."""
  ra = np.argsort(np.argsort(a, axis=1), axis=1).astype(np.float64)
  rb = np.argsort(np.argsort(b, axis=1), axis=1).astype(np.float64)
  ra -= ra.mean(1, keepdims=True)
  rb -= rb.mean(1, keepdims=True)
  num = (ra * rb).sum(1)
  return float(np.mean(num / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))))


def quality(ranked, queries) -> dict[str, float]:
  relevant = [q.relevant_ids for q in queries]
  values = metrics_lib.per_query(ranked, relevant, k=10)
  return {
    "mrr": float(values["mrr"].mean()),
    "recall@10": float(values["recall@10"].mean()),
  }


def compare(loaded, spec, fix, projection, data) -> dict:
  """The factored V against the elementwise one at one projection."""
  queries, batches, ids, sample_batches = data
  ranked, rows = {}, {}
  start = time.time()
  for factored in (False, True):
    encoder = make_encoder(
      loaded,
      spec,
      fix,
      factored=factored,
      projection=projection_spec(projection, seed=0),
      sample_batches=sample_batches,
    )
    rows[factored] = scores(encoder, loaded, queries, batches)
    ranked[factored] = top_ids(rows[factored], ids)
  shared = overlaps(ranked[True], ranked[False])
  result = {
    "overlap@10": float(shared.mean()),
    "overlap@10_min": float(shared.min()),
    "spearman": spearman(rows[True], rows[False]),
    "elementwise": quality(ranked[False], queries),
    "factored": quality(ranked[True], queries),
  }
  if projection != "none":
    other = make_encoder(
      loaded,
      spec,
      fix,
      factored=False,
      projection=projection_spec(projection, seed=1),
      sample_batches=sample_batches,
    )
    other_ranked = top_ids(scores(other, loaded, queries, batches), ids)
    result["seed_overlap@10"] = float(
      overlaps(other_ranked, ranked[False]).mean()
    )
  result["seconds"] = round(time.time() - start, 1)
  return result


def main(argv):
  del argv
  corpus, queries_path, checkpoint = data_and_checkpoint()
  loaded = checkpoint_lib.load_checkpoint(checkpoint)
  if loaded.optimizer_config.name != "adamw" and "adam" in _CORRECTIONS.value:
    raise ValueError(f"{checkpoint} was not trained with AdamW: no `nu`")
  queries = [q for q in data_lib.read_queries(queries_path) if q.relevant_ids]
  batches = corpus_batches(loaded, data_lib.read_corpus(corpus))
  ids = [i for row_ids, _ in batches for i in row_ids]
  sample = encode_lib.energy_sample(corpus, size=_SAMPLE.value, seed=0)
  sample_batches = [batch for _, batch in corpus_batches(loaded, sample)]
  data = (queries, batches, ids, sample_batches)
  results = {}
  for kind in _CORRECTIONS.value:
    spec, fix = elementwise_v(loaded, kind, sample_batches)
    for projection in _PROJECTIONS.value:
      key = f"{kind}/{projection}"
      results[key] = compare(loaded, spec, fix, projection, data)
      print(json.dumps({key: results[key]}), flush=True)
  print(
    json.dumps(
      {
        "checkpoint": checkpoint,
        "corpus_size": len(ids),
        "queries": len(queries),
        "params": int(sum(x.size for x in jax.tree.leaves(loaded.params))),
        "results": results,
      },
      indent=2,
    )
  )


if __name__ == "__main__":
  app.run(main)
