"""Writes the golden fixtures of the Hugging Face ports (tests/fixtures/hf).

Each fixture is a tiny random model saved by Hugging Face transformers on
PyTorch as a checkpoint directory (`config.json` + `model.safetensors`),
plus `golden.npz`:

- `token_ids`: [batch, seq] int32, fixed (seeded);
- `logits`: [batch, seq, vocab] float32, from the PyTorch model;
- `loss`: [batch] float32, summed next-token cross-entropy per example;
- `grad/<hf tensor name>`: [batch, *tensor shape] float32, the per-example
  gradient of that loss with respect to a few tensors, in HF's layout.

`gpt_neox_serial/` is GPT-NeoX without the parallel residual, with a
quarter of each head rotating. `llama_sharded/` holds the same weights as
`llama/`, saved in shards with `model.safetensors.index.json` (its golden is
`llama/golden.npz`).

Weights are redrawn with a larger spread than HF's init (N(0, 0.2) matrices,
norm scales 1 + N(0, 0.1), biases N(0, 0.1)), so that a wrong layout moves
the logits well beyond the tests' tolerance.

Made with torch 2.13.0 (CPU) and transformers 5.24.0, on Python 3.11. Torch
is not a dependency of trak_jax; to rerun, use a separate environment:

  python3 -m venv /work/torchenv
  /work/torchenv/bin/pip install torch==2.13.0 transformers==5.24.0 \
      safetensors numpy
  /work/torchenv/bin/python scripts/make_hf_fixtures.py

It rewrites tests/fixtures/hf/ in place (or under --out).
"""

import argparse
import pathlib
import shutil

import numpy as np
import torch
import transformers

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "hf"
BATCH, SEQ = 2, 10
SEED = 0


def _configs() -> dict[str, tuple[transformers.PretrainedConfig, list[str]]]:
  """Fixture name -> (config, HF tensors whose gradients are saved)."""
  return {
    "gpt2": (
      transformers.GPT2Config(
        vocab_size=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_inner=32,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
      ),
      ["transformer.h.0.attn.c_attn.weight", "transformer.wte.weight"],
    ),
    "gpt_neox": (
      transformers.GPTNeoXConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        rotary_pct=0.5,
        max_position_embeddings=32,
      ),
      [
        "gpt_neox.layers.0.attention.query_key_value.weight",
        "gpt_neox.layers.1.mlp.dense_4h_to_h.weight",
      ],
    ),
    "gpt_neox_serial": (
      transformers.GPTNeoXConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        rotary_pct=0.25,
        rotary_emb_base=20000,
        use_parallel_residual=False,
        max_position_embeddings=32,
      ),
      ["gpt_neox.layers.1.attention.query_key_value.bias"],
    ),
    "llama": (
      transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        rope_theta=500000.0,
        max_position_embeddings=32,
      ),
      [
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
      ],
    ),
    "qwen2": (
      transformers.Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        max_position_embeddings=32,
      ),
      [
        "model.layers.0.self_attn.q_proj.bias",
        "model.embed_tokens.weight",
      ],
    ),
    "mistral": (
      transformers.MistralConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=12,
        intermediate_size=32,
        max_position_embeddings=32,
      ),
      ["model.layers.1.self_attn.v_proj.weight"],
    ),
  }


def _randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator)
      if "norm" in name or name.split(".")[-2].startswith("ln_"):
        value = 1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
      else:
        value = (0.2 if param.ndim > 1 else 0.1) * noise
      param.copy_(value)


def _per_example_grads(model, token_ids, names):
  params = dict(model.named_parameters())
  grads = {name: [] for name in names}
  losses = []
  for row in token_ids:
    model.zero_grad()
    ids = torch.tensor(row[None], dtype=torch.long)
    logits = model(input_ids=ids).logits[0]
    loss = torch.nn.functional.cross_entropy(
      logits[:-1], ids[0, 1:], reduction="sum"
    )
    loss.backward()
    losses.append(loss.item())
    for name in names:
      grads[name].append(params[name].grad.numpy().copy())
  return np.asarray(losses, np.float32), {
    f"grad/{name}": np.stack(g).astype(np.float32) for name, g in grads.items()
  }


def _save(model, directory: pathlib.Path, **options) -> None:
  model.save_pretrained(directory, safe_serialization=True, **options)
  # Generation settings are not the model's; the ports do not read them.
  (directory / "generation_config.json").unlink(missing_ok=True)


def make_fixture(name, config, grad_names, out: pathlib.Path) -> None:
  torch.manual_seed(SEED)
  config._attn_implementation = "eager"
  model = transformers.AutoModelForCausalLM.from_config(config)
  model.eval()
  _randomise(model, torch.Generator().manual_seed(SEED))
  model.tie_weights()
  directory = out / name
  shutil.rmtree(directory, ignore_errors=True)
  _save(model, directory)
  rng = np.random.default_rng(SEED)
  token_ids = rng.integers(0, config.vocab_size, (BATCH, SEQ)).astype(np.int32)
  with torch.no_grad():
    logits = model(input_ids=torch.tensor(token_ids, dtype=torch.long)).logits
  losses, grads = _per_example_grads(model, token_ids, grad_names)
  np.savez_compressed(
    directory / "golden.npz",
    token_ids=token_ids,
    logits=logits.numpy().astype(np.float32),
    loss=losses,
    **grads,
  )
  if name == "llama":
    sharded = out / "llama_sharded"
    shutil.rmtree(sharded, ignore_errors=True)
    _save(model, sharded, max_shard_size="16KB")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=OUT)
  args = parser.parse_args()
  print(f"torch {torch.__version__}, transformers {transformers.__version__}")
  for name, (config, grad_names) in _configs().items():
    make_fixture(name, config, grad_names, args.out)
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
  main()
