"""`trak-jax-import`: a Hugging Face directory -> a checkpoint jobs read.

The golden fixtures (tests/fixtures/hf, written by
scripts/make_hf_fixtures.py with transformers on PyTorch) get a word-level
`tokenizer.json` of their vocabulary, are imported, and loaded back with
`trak_jax.load_checkpoint`: the logits must be transformers' own.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tokenizers

import trak_jax
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import partitioning
from trak_jax import tokenizer as tokenizer_lib
from trak_jax.hf import importer, synthetic

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
GOLDEN = {
  "gpt2": "gpt2",
  "gpt_neox": "gpt_neox",
  "llama": "llama",
  "llama_sharded": "llama",
  "mistral": "mistral",
  "qwen2": "qwen2",
}
TEXTS = [
  "Records show that Tamara Morrison was born in Belo Horizonte.",
  "Uppsala is a town in Sweden.",
  "The river Dalalven flows through Uppsala county.",
] * 10


def _word_tokenizer(num_words: int) -> str:
  """A word-level tokenizer.json: <s>, </s>, <unk>, then w0, w1, ..."""
  words = ["<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(num_words - 3)]
  model = tokenizers.models.WordLevel(
    {w: i for i, w in enumerate(words)}, unk_token="<unk>"
  )
  tokenizer = tokenizers.Tokenizer(model)
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  return tokenizer.to_str()


def _source(tmp_path, name: str, *, num_words: int | None = None):
  """A copy of fixture `name` with a tokenizer of its vocabulary size."""
  source = tmp_path / f"{name}_source"
  shutil.copytree(FIXTURES / name, source)
  vocab = json.loads((source / "config.json").read_text())["vocab_size"]
  (source / "tokenizer.json").write_text(_word_tokenizer(num_words or vocab))
  settings = {"bos_token": "<s>", "eos_token": {"content": "</s>"}}
  (source / "tokenizer_config.json").write_text(json.dumps(settings))
  return source


def _golden(name: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / GOLDEN[name] / "golden.npz") as golden:
    return dict(golden)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_imported_checkpoint_gives_transformers_logits(tmp_path, name):
  step_dir = importer.import_checkpoint(
    _source(tmp_path, name), str(tmp_path / "out"), max_len=16
  )
  assert step_dir == str(tmp_path / "out" / "checkpoints" / "0")
  loaded = trak_jax.load_checkpoint(str(tmp_path / "out"))
  assert loaded.opt_state is None and loaded.optimizer_config is None
  assert loaded.max_len == 16
  assert (loaded.tokenizer.bos_id, loaded.tokenizer.eos_id) == (0, 1)
  assert loaded.digest == checkpoint_lib.params_digest(loaded.params)
  golden = _golden(name)
  out = trak_jax.logits(loaded, golden["token_ids"])
  assert out.dtype == np.float32 and out.shape == golden["logits"].shape
  np.testing.assert_allclose(out, golden["logits"], atol=1e-4, rtol=1e-4)


def test_a_sharded_load_gives_the_logits_of_a_single_device_load(tmp_path):
  importer.import_checkpoint(_source(tmp_path, "llama"), str(tmp_path / "out"))
  mesh = partitioning.make_mesh(data=4, model=2)
  sharded = trak_jax.load_checkpoint(str(tmp_path / "out"), mesh=mesh)
  single = trak_jax.load_checkpoint(
    str(tmp_path / "out"),
    mesh=partitioning.make_mesh(data=1, devices=jax.devices()[:1]),
  )
  # The weight matrices are split over the model axis, not replicated.
  kernel = sharded.params["layers_0"]["mlp"]["up_proj"]["kernel"]
  assert kernel.sharding.spec[-1] == partitioning.MODEL_AXIS
  shard_shapes = {s.data.shape for s in kernel.addressable_shards}
  assert shard_shapes == {(kernel.shape[0], kernel.shape[1] // 2)}
  ids = _golden("llama")["token_ids"]
  np.testing.assert_allclose(
    trak_jax.logits(sharded, ids), trak_jax.logits(single, ids), atol=1e-5
  )


def _assert_nothing_written(out: pathlib.Path):
  checkpoints = out / "checkpoints"
  assert not checkpoints.exists() or not list(checkpoints.iterdir())


def test_an_unsupported_architecture_names_file_and_field(tmp_path):
  source = _source(tmp_path, "llama")
  values = json.loads((source / "config.json").read_text())
  (source / "config.json").write_text(
    json.dumps({**values, "model_type": "t5"})
  )
  with pytest.raises(
    trak_jax.hf.HFConfigError, match="config.json.*model_type"
  ):
    importer.import_checkpoint(source, str(tmp_path / "out"))
  _assert_nothing_written(tmp_path / "out")


def test_a_truncated_shard_names_the_shard(tmp_path):
  source = _source(tmp_path, "llama_sharded")
  shard = sorted(source.glob("model-*.safetensors"))[-1]
  shard.write_bytes(shard.read_bytes()[:-100])
  with pytest.raises(trak_jax.hf.HFWeightsError, match=shard.name):
    importer.import_checkpoint(source, str(tmp_path / "out"))
  _assert_nothing_written(tmp_path / "out")


def test_a_shape_not_matching_the_config_names_the_tensor(tmp_path):
  source = _source(tmp_path, "llama")
  values = json.loads((source / "config.json").read_text())
  values["intermediate_size"] += 8
  (source / "config.json").write_text(json.dumps(values))
  with pytest.raises(trak_jax.hf.HFWeightsError, match="gate_proj.*shape"):
    importer.import_checkpoint(source, str(tmp_path / "out"))
  _assert_nothing_written(tmp_path / "out")


def test_a_vocabulary_larger_than_the_embedding_is_refused(tmp_path):
  source = _source(tmp_path, "llama", num_words=100)
  with pytest.raises(
    importer.HFTokenizerError, match="tokenizer.json.*100 tokens.*vocab_size"
  ):
    importer.import_checkpoint(source, str(tmp_path / "out"))
  _assert_nothing_written(tmp_path / "out")


def test_a_missing_tokenizer_or_special_token_is_named(tmp_path):
  source = _source(tmp_path, "llama")
  (source / "tokenizer_config.json").write_text(
    json.dumps({"bos_token": "<bos>", "eos_token": "</s>"})
  )
  with pytest.raises(importer.HFTokenizerError, match="bos_token.*'<bos>'"):
    importer.import_checkpoint(source, str(tmp_path / "out"))
  (source / "tokenizer.json").unlink()
  with pytest.raises(importer.HFTokenizerError, match="tokenizer.json"):
    importer.import_checkpoint(source, str(tmp_path / "out"))
  _assert_nothing_written(tmp_path / "out")


def test_an_existing_checkpoint_is_not_overwritten(tmp_path):
  source = _source(tmp_path, "llama")
  importer.import_checkpoint(source, str(tmp_path / "out"))
  with pytest.raises(FileExistsError, match="checkpoints"):
    importer.import_checkpoint(source, str(tmp_path / "out"))


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
  """A synthetic Llama with a byte-level BPE tokenizer, imported."""
  root = tmp_path_factory.mktemp("bpe")
  synthetic.write_checkpoint(root / "source", TEXTS, vocab_size=300)
  importer.import_checkpoint(root / "source", str(root / "out"))
  return trak_jax.load_checkpoint(str(root / "out")).tokenizer


def test_a_query_target_is_the_tokens_after_its_prompt(bpe):
  prompt, target = "Uppsala is a town in", " Sweden"
  ids, mask = data_lib.tokenize_query(bpe, prompt, target, max_len=64)
  # Encoded as one text: byte-level BPE merges the space into the word.
  assert list(ids) == [bpe.bos_id, *bpe.encode(prompt + target)]
  assert bpe.decode(ids[mask == 1]) == target
  assert bpe.decode(ids[mask == 0]) == prompt


def test_the_hf_tokenizer_survives_saving_and_pickling(bpe):
  import pickle

  for copy in (
    tokenizer_lib.from_item(json.loads(json.dumps(tokenizer_lib.to_item(bpe)))),
    pickle.loads(pickle.dumps(bpe)),
  ):
    assert (copy.bos_id, copy.eos_id) == (bpe.bos_id, bpe.eos_id)
    assert copy.encode(TEXTS[0]) == bpe.encode(TEXTS[0])
  text_ids, _ = data_lib.tokenize_text(bpe, TEXTS[0], max_len=64)
  assert text_ids[0] == bpe.bos_id and text_ids[-1] == bpe.eos_id
  assert bpe.decode(text_ids) == TEXTS[0]


def test_the_import_binary_writes_a_checkpoint(tmp_path):
  source = _source(tmp_path, "qwen2")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "trak_jax.import_main",
      f"--source={source}",
      f"--output_dir={tmp_path / 'out'}",
      "--max_len=8",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "checkpoints/0" in result.stdout
  header = checkpoint_lib.read_header(str(tmp_path / "out"))
  assert header.max_len == 8
  assert header.metadata["imported_from"]["source"] == str(source.resolve())


def _saved_optimizer_state(tmp_path, params, tx):
  """One step of `tx` on random gradients, saved with Orbax."""
  grads = jax.tree.map(
    lambda p: np.random.default_rng(p.size).normal(size=p.shape), params
  )
  state = tx.init(params)
  _, state = tx.update(grads, state, params)
  path = tmp_path / "opt_state"
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, state)
  checkpointer.wait_until_finished()
  return str(path), state


@pytest.mark.parametrize("name", ["adam", "adafactor"])
def test_an_orbax_optax_state_is_imported_with_the_model(tmp_path, name):
  source = _source(tmp_path, "llama")
  params = trak_jax.hf.load(source).params
  # Chains other than trak_jax's own: the statistics are found by name.
  tx = {
    "adam": optax.chain(optax.clip(5.0), optax.adam(1e-3, b2=0.95)),
    "adafactor": optax.adafactor(1e-3, min_dim_size_to_factor=16),
  }[name]
  path, state = _saved_optimizer_state(tmp_path, params, tx)
  importer.import_checkpoint(
    source, str(tmp_path / "out"), learning_rate=1e-4, optimizer_state=path
  )
  loaded = trak_jax.load_checkpoint(str(tmp_path / "out"))
  assert loaded.optimizer_config.final_learning_rate == pytest.approx(1e-4)
  spec = correction_lib.CorrectionSpec(kind=name)
  got = correction_lib.from_checkpoint(spec, loaded.opt_state, loaded.params)
  want = correction_lib.from_checkpoint(spec, state, params)
  assert got.keys() == want.keys()
  for key in want:
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
      got[key],
      want[key],
    )


def test_an_optimizer_state_of_another_model_is_refused(tmp_path):
  source = _source(tmp_path, "llama")
  params = trak_jax.hf.load(source).params
  params["lm_head"]["kernel"] = np.zeros((3, 3), np.float32)
  path, _ = _saved_optimizer_state(tmp_path, params, optax.adam(1e-3))
  with pytest.raises(
    importer.OptimizerStateError, match=r"opt_state: mu\['lm_head'\].*shape"
  ):
    importer.import_checkpoint(
      source, str(tmp_path / "out"), learning_rate=1e-4, optimizer_state=path
    )
  _assert_nothing_written(tmp_path / "out")
