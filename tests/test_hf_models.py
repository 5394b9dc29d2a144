"""The Hugging Face ports against golden outputs of transformers on PyTorch.

The fixtures under tests/fixtures/hf were written by
scripts/make_hf_fixtures.py (its docstring gives the versions); these tests
need no torch. Each checks the port's logits and per-example loss gradients
against the PyTorch model's, and that a broken checkpoint is an error naming
the file and the field or tensor.
"""

import json
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from trak_jax import hf
from trak_jax.hf import loader
from trak_jax.model import token_losses

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
# Fixture directory -> the one holding its golden.npz.
CHECKPOINTS = {
  "gpt2": "gpt2",
  "gpt_neox": "gpt_neox",
  "gpt_neox_serial": "gpt_neox_serial",
  "llama": "llama",
  "llama_sharded": "llama",
  "mistral": "mistral",
  "qwen2": "qwen2",
}


def _golden(name: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / CHECKPOINTS[name] / "golden.npz") as golden:
    return dict(golden)


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def imported(request):
  return request.param, hf.load(FIXTURES / request.param)


def test_config_dispatch_on_model_type():
  assert isinstance(hf.read_config(FIXTURES / "gpt2"), hf.GPT2Config)
  neox = hf.read_config(FIXTURES / "gpt_neox")
  assert isinstance(neox, hf.GPTNeoXConfig)
  assert neox.rotary_ndims == neox.head_dim // 2  # rotary_pct 0.5
  llama = hf.read_config(FIXTURES / "llama")
  assert (llama.num_heads, llama.num_kv_heads) == (4, 2)
  assert llama.rope_theta == 500000.0
  qwen2 = hf.read_config(FIXTURES / "qwen2")
  assert qwen2.qkv_bias and not qwen2.output_bias and qwen2.tie_word_embeddings
  mistral = hf.read_config(FIXTURES / "mistral")
  assert mistral.head_dim * mistral.num_heads != mistral.hidden_size


def test_sharded_and_single_file_loads_are_equal():
  single = hf.load(FIXTURES / "llama").params
  sharded = hf.load(FIXTURES / "llama_sharded").params
  assert len(json.loads(_index_path().read_text())["weight_map"]) > 1
  jax.tree.map(np.testing.assert_array_equal, single, sharded)


def test_logits_match_transformers(imported):
  name, model = imported
  golden = _golden(name)
  out = hf.logits(model.config, model.params, golden["token_ids"])
  assert out.dtype == np.float32
  assert out.shape == golden["logits"].shape
  # The fixtures' weights are spread enough that logits vary by units.
  assert golden["logits"].std() > 0.5
  np.testing.assert_allclose(out, golden["logits"], atol=1e-4, rtol=1e-4)


def test_bfloat16_logits_are_close(imported):
  name, model = imported
  golden = _golden(name)
  config = hf.read_config(FIXTURES / name, dtype="bfloat16")
  out = hf.logits(config, model.params, golden["token_ids"])
  assert out.dtype == np.float32
  error = np.abs(out - golden["logits"]).mean() / golden["logits"].std()
  assert 0 < error < 0.05


def _per_example_grads(model: hf.HFModel, token_ids: np.ndarray):
  """Per-example loss and gradients: summed next-token cross-entropy."""

  def loss(params, ids):
    logits = model.module.apply({"params": params}, ids[None])
    return token_losses(logits, ids[None], jnp.ones_like(ids[None])).sum()

  params = jax.tree.map(jnp.asarray, model.params)
  ids = jnp.asarray(token_ids)
  losses = jax.vmap(loss, in_axes=(None, 0))(params, ids)
  grads = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, ids)
  return np.asarray(losses), grads


def test_per_example_gradients_match_transformers(imported):
  name, model = imported
  golden = _golden(name)
  losses, grads = _per_example_grads(model, golden["token_ids"])
  np.testing.assert_allclose(losses, golden["loss"], rtol=1e-5)
  architecture = loader.ARCHITECTURES[type(model.config)]
  mappings = {
    m.hf_name: m
    for m in architecture.tensor_mappings(model.config, architecture.hf_prefix)
  }
  names = [k.removeprefix("grad/") for k in golden if k.startswith("grad/")]
  assert names
  for hf_name in names:
    mapping = mappings[hf_name]
    grad = grads
    for key in mapping.flax_path:
      grad = grad[key]
    # [batch, in, out] -> [batch, out, in], torch Linear's layout.
    grad = np.asarray(grad)
    if mapping.transpose:
      grad = np.swapaxes(grad, 1, 2)
    want = golden[f"grad/{hf_name}"]
    assert np.abs(want).max() > 1e-2, hf_name
    np.testing.assert_allclose(
      grad, want, atol=1e-4, rtol=1e-3, err_msg=hf_name
    )


def test_params_carry_logical_axis_names():
  config = hf.read_config(FIXTURES / "llama")
  ids = jnp.zeros((1, 4), jnp.int32)
  boxed = hf.build_module(config).init(jax.random.key(0), ids)["params"]
  q_proj = boxed["layers_0"]["self_attn"]["q_proj"]["kernel"]
  assert q_proj.names == ("embed", "heads")
  assert boxed["embed_tokens"]["embedding"].names == ("vocab", "embed")
  assert boxed["lm_head"]["kernel"].names == ("embed", "vocab")


def test_every_weight_matrix_is_a_flax_dense_or_embed(imported):
  # What a generic gradient capture (nn.intercept_methods over nn.Dense and
  # nn.Embed) needs: every kernel and embedding is used through them.
  _, model = imported
  used = set()

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense | nn.Embed):
      used.add(context.module.path)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.module.apply({"params": model.params}, jnp.zeros((1, 4), jnp.int32))
  matrices = {
    tuple(key.key for key in path[:-1])
    for path, leaf in jax.tree_util.tree_leaves_with_path(model.params)
    if leaf.ndim == 2
  }
  assert matrices and matrices <= used


def test_bare_base_model_names_load(tmp_path):
  # `GPT2Model.save_pretrained` writes "h.0...", not "transformer.h.0...".
  directory = _copy("gpt2", tmp_path)
  file = directory / "model.safetensors"
  tensors = load_file(file)
  save_file(
    {k.removeprefix("transformer."): v for k, v in tensors.items()}, file
  )
  bare = hf.load(directory).params
  jax.tree.map(
    np.testing.assert_array_equal, bare, hf.load(FIXTURES / "gpt2").params
  )


# Broken checkpoints: each error names the file and the field or tensor.


def _copy(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def _index_path() -> pathlib.Path:
  return FIXTURES / "llama_sharded" / "model.safetensors.index.json"


def _edit_config(directory: pathlib.Path, **changes) -> pathlib.Path:
  path = directory / "config.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
  return path


def test_unsupported_model_type_names_file_and_field(tmp_path):
  path = _edit_config(_copy("llama", tmp_path), model_type="bert")
  with pytest.raises(ValueError, match="model_type") as raised:
    hf.load(path.parent)
  assert str(path) in str(raised.value) and "bert" in str(raised.value)


def test_scaled_rope_is_refused(tmp_path):
  path = _edit_config(
    _copy("llama", tmp_path),
    rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0},
  )
  with pytest.raises(hf.HFConfigError, match="rope_parameters") as raised:
    hf.read_config(path)
  assert str(path) in str(raised.value)


def test_transformers_4_rope_fields_are_read(tmp_path):
  directory = _copy("gpt_neox", tmp_path)
  values = json.loads((directory / "config.json").read_text())
  del values["rope_parameters"]
  values.update(rotary_pct=0.5, rotary_emb_base=10000)
  (directory / "config.json").write_text(json.dumps(values))
  assert hf.read_config(directory) == hf.read_config(FIXTURES / "gpt_neox")


def test_missing_tensor_names_file_and_tensor(tmp_path):
  directory = _copy("gpt_neox", tmp_path)
  file = directory / "model.safetensors"
  tensors = load_file(file)
  missing = "gpt_neox.layers.1.attention.dense.weight"
  del tensors[missing]
  save_file(tensors, file)
  with pytest.raises(hf.HFWeightsError, match="missing") as raised:
    hf.load(directory)
  assert str(file) in str(raised.value) and missing in str(raised.value)


def test_shape_not_matching_config_names_file_and_tensor(tmp_path):
  directory = _copy("llama", tmp_path)
  _edit_config(directory, intermediate_size=40)
  with pytest.raises(hf.HFWeightsError, match="shape") as raised:
    hf.load(directory)
  message = str(raised.value)
  assert str(directory / "model.safetensors") in message
  assert "mlp.gate_proj.weight" in message and "(40, 32)" in message


def test_missing_shard_names_index_and_shard(tmp_path):
  directory = _copy("llama_sharded", tmp_path)
  index = directory / "model.safetensors.index.json"
  shard = sorted(set(json.loads(index.read_text())["weight_map"].values()))[1]
  (directory / shard).unlink()
  with pytest.raises(hf.HFWeightsError, match="missing") as raised:
    hf.load(directory)
  assert str(index) in str(raised.value) and shard in str(raised.value)


def test_sequence_longer_than_sliding_window_is_refused(tmp_path):
  directory = _copy("mistral", tmp_path)
  _edit_config(directory, sliding_window=4)
  model = hf.load(directory)
  with pytest.raises(ValueError, match="sliding_window"):
    hf.logits(model.config, model.params, np.zeros((1, 5), np.int32))


def test_bfloat16_checkpoint_loads_as_float32(tmp_path):
  directory = _copy("qwen2", tmp_path)
  file = directory / "model.safetensors"
  tensors = load_file(file)
  save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, file)
  params = hf.load(directory).params
  q_proj = params["layers_0"]["self_attn"]["q_proj"]["kernel"]
  want = tensors["model.layers.0.self_attn.q_proj.weight"].T
  assert q_proj.dtype == np.float32
  np.testing.assert_array_equal(
    q_proj, want.astype(ml_dtypes.bfloat16).astype(np.float32)
  )
  assert not np.array_equal(q_proj, want)
