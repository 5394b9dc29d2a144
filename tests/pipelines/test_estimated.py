"""Correction "estimated" (no optimizer state) through every job."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import (
  encode_distributed,
  encode_lib,
  hessian_lib,
  index_lib,
  retrieve_lib,
)
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import correction as correction_lib
from trak_jax import encoder as encoder_lib
from trak_jax import gradients
from trak_jax import model as model_lib
from trak_jax import projection as projection_lib
from trak_jax import report as report_lib
from trak_jax import store as store_lib

SAMPLE = 24
CONFIG = dataclasses.replace(
  encoder_lib.preset(
    "trackstar",
    correction="estimated",
    projection=projection_lib.ProjectionSpec(dim=128),
  ),
  correction=correction_lib.CorrectionSpec(
    kind="estimated", estimate_sample=SAMPLE
  ),
)


def _options(tiny_run, output_dir, **kwargs):
  return encode_lib.EncodeOptions(
    corpus=tiny_run["corpus"],
    checkpoint=tiny_run["checkpoint"],
    output_dir=str(output_dir),
    encoder_config=CONFIG,
    num_shards=2,
    batch_size=16,
    **kwargs,
  )


@pytest.fixture(scope="module")
def jobs(tiny_run, tmp_path_factory):
  root = tmp_path_factory.mktemp("estimated")
  encode_lib.run_pipeline(
    TestPipeline(), options=_options(tiny_run, root / "store")
  )
  hessian = hessian_lib.run_pipeline(
    TestPipeline(),
    options=hessian_lib.HessianOptions(
      store_dir=str(root / "store"),
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      output_dir=str(root / "hessian"),
      encoder_config=CONFIG,
      batch_size=16,
    ),
  )
  index_lib.run_pipeline(
    TestPipeline(),
    options=index_lib.IndexOptions(
      store_dir=str(root / "store"),
      hessian_dir=str(root / "hessian"),
      output_dir=str(root / "index"),
      encoder_config=CONFIG,
      kind="exact",
    ),
  )
  return {"root": root, "hessian": hessian}


def _recorded(store_dir) -> correction_lib.CorrectionSpec:
  manifest = store_lib.EncodingStore(str(store_dir)).manifest
  return correction_lib.CorrectionSpec(
    **manifest["encoder_config"]["correction"]
  )


def test_the_encode_job_saves_v_of_its_sample_beside_the_store(jobs, tiny_run):
  spec = _recorded(jobs["root"] / "store")
  assert spec.estimate_path == str(
    jobs["root"] / "store" / encode_lib.SECOND_MOMENTS
  )
  assert spec.estimate_digest
  # Brute force: the mean squared per-example gradient of the same sample.
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  options = _options(tiny_run, jobs["root"] / "unused")
  sample = encode_lib.corpus_batches(
    loaded.tokenizer,
    encode_lib.energy_sample(tiny_run["corpus"], size=SAMPLE, seed=0),
    options=options,
    max_len=loaded.model_config.max_len,
  )
  apply_fn = model_lib.apply_fn(loaded.model_config)
  sums, count = None, 0
  for batch in sample:
    grads = gradients.flat_params(
      gradients.per_example_grads(
        apply_fn, loaded.params, batch.token_ids, batch.loss_mask
      )
    )
    squares = {p: np.square(np.asarray(g)).sum(0) for p, g in grads.items()}
    sums = squares if sums is None else {p: sums[p] + squares[p] for p in sums}
    count += int((np.asarray(batch.loss_mask)[:, 1:].sum(-1) > 0).sum())
  saved = correction_lib.load_estimate(spec, loaded.params)
  for path, total in sums.items():
    expected = 1 / np.sqrt(total / count + spec.epsilon)
    np.testing.assert_allclose(
      saved[path].scale, expected, rtol=1e-4, err_msg=str(path)
    )


def test_hessian_index_and_retrieval_take_the_stores_v(
  jobs, tiny_run, tmp_path
):
  digest = _recorded(jobs["root"] / "store").estimate_digest
  fingerprint = jobs["hessian"]["fingerprint"]["correction"]
  assert json.loads(fingerprint)["estimate_digest"] == digest
  summary = retrieve_lib.run_pipeline(
    TestPipeline(),
    options=retrieve_lib.RetrieveOptions(
      queries=tiny_run["queries"],
      checkpoint=tiny_run["checkpoint"],
      corpus=tiny_run["corpus"],
      indexes=(("trackstar", str(jobs["root"] / "index")),),
      output_dir=str(tmp_path / "report"),
      batch_size=16,
    ),
  )
  records = report_lib.read_report_jsonl(
    str(tmp_path / "report" / "report.jsonl")
  )
  assert records and all(
    len(r["results"]["trackstar"]["proponents"]) == 10 for r in records
  )
  assert 0 < summary["trackstar"]["mrr"]["mean"] <= 1


def test_a_rerun_keeps_the_saved_v(jobs, tiny_run):
  store = jobs["root"] / "store"
  path = store / encode_lib.SECOND_MOMENTS
  before = (path.read_bytes(), _recorded(store).estimate_digest)
  again = encode_lib.estimate_correction(_options(tiny_run, store))
  assert again.encoder_config.correction.estimate_digest == before[1]
  assert path.read_bytes() == before[0]


def test_another_v_is_refused_by_name(jobs, tiny_run, tmp_path):
  store = jobs["root"] / "store"
  spec = _recorded(store)
  loaded = checkpoint_lib.load_checkpoint(tiny_run["checkpoint"])
  # A V file changed after the store recorded it.
  changed = tmp_path / "changed.npz"
  shutil.copy(spec.estimate_path, changed)
  with np.load(changed) as f:
    arrays = {k: f[k] * 2 for k in f.files}
  np.savez(changed, **arrays)
  moved = dataclasses.replace(spec, estimate_path=str(changed))
  with pytest.raises(correction_lib.EstimateMismatchError, match="digest"):
    correction_lib.load_estimate(moved, loaded.params)
  # A Hessian asked for with another V than the store's is refused.
  other = dataclasses.replace(
    CONFIG,
    correction=dataclasses.replace(
      CONFIG.correction, estimate_path=str(changed), estimate_digest=None
    ),
  )
  other = dataclasses.replace(
    other,
    correction=dataclasses.replace(
      other.correction,
      estimate_digest=correction_lib.estimate_digest(
        correction_lib.load_estimate(other.correction, loaded.params)
      ),
    ),
  )
  with pytest.raises(
    encoder_lib.FingerprintMismatchError, match="'correction'"
  ):
    hessian_lib.run_pipeline(
      TestPipeline(),
      options=hessian_lib.HessianOptions(
        store_dir=str(store),
        queries=tiny_run["queries"],
        checkpoint=tiny_run["checkpoint"],
        output_dir=str(tmp_path / "hessian"),
        encoder_config=other,
        batch_size=16,
      ),
    )


def test_the_multi_process_encoder_estimates_the_same_v(
  jobs, tiny_run, tmp_path
):
  options = _options(tiny_run, tmp_path / "loop")
  result = encode_distributed.run(options)
  assert result["mesh"]["processes"] == 1
  theirs = _recorded(jobs["root"] / "store")
  assert _recorded(tmp_path / "loop").estimate_digest == theirs.estimate_digest
  beam = store_lib.EncodingStore(str(jobs["root"] / "store")).load()
  loop = store_lib.EncodingStore(options.output_dir).load()
  assert beam.ids == loop.ids
  scale = np.abs(beam.vectors).max(axis=1, keepdims=True)
  assert (np.abs(loop.vectors - beam.vectors) <= 2e-4 * scale).all()
