r"""The Beam encode job against the bare encoder loop, and as the corpus grows.

  python bench/pipeline_scaling.py --checkpoint=out/demo/model \
    --corpus=out/demo/data/corpus.jsonl [--multipliers=1,2,4] [--repeats=1]

Prints one JSON object:
- `bare_tokens_per_second`: the encoder called in a plain loop over the
  corpus (batches of 32, after one warm-up batch), in this process;
- per corpus multiplier m (the corpus repeated m times under new ids): the
  encode job's wall time end to end (`trak-jax-encode` in a subprocess on the
  DirectRunner, start-up and compilation included), its tokens/s, its peak
  resident memory (the process tree, sampled every 50 ms), and the ratios
  that the performance targets name: time(m) / time(1), peak(m) / peak(1),
  and pipeline tokens/s over bare tokens/s.
Medians over `repeats` runs.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
from absl import app, flags

from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib

_CHECKPOINT = flags.DEFINE_string("checkpoint", "out/demo/model", "Model.")
_CORPUS = flags.DEFINE_string(
  "corpus", "out/demo/data/corpus.jsonl", "Corpus to repeat."
)
_MULTIPLIERS = flags.DEFINE_list("multipliers", ["1", "2", "4"], "Sizes.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Runs per size.")
_BATCH = 32


def repeated_corpus(path: str, times: int, directory: str) -> str:
  out = os.path.join(directory, f"corpus_x{times}.jsonl")
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  with open(out, "w") as f:
    for copy in range(times):
      for record in records:
        f.write(
          json.dumps({"id": f"{record['id']}#{copy}", "text": record["text"]})
          + "\n"
        )
  return out


def run_job(corpus: str, output_dir: str) -> tuple[float, float]:
  """(wall seconds, peak RSS MiB of the process tree) of one encode job."""
  command = [
    sys.executable,
    "-m",
    "pipelines.encode_main",
    f"--corpus={corpus}",
    f"--checkpoint={_CHECKPOINT.value}",
    f"--output_dir={output_dir}",
    "--gin_file=runs/encoder.gin",
    f"--batch_size={_BATCH}",
  ]
  start = time.perf_counter()
  child = subprocess.Popen(
    command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  process, peak = psutil.Process(child.pid), 0
  while child.poll() is None:
    try:
      tree = [process, *process.children(recursive=True)]
      peak = max(peak, sum(p.memory_info().rss for p in tree))
    except psutil.Error:
      pass
    time.sleep(0.05)
  if child.returncode:
    raise RuntimeError(f"encode job failed: {' '.join(command)}")
  return time.perf_counter() - start, peak / 2**20


def bare_tokens_per_second() -> tuple[float, int]:
  """The encoder in a plain loop over the corpus; and the corpus's tokens."""
  loaded = checkpoint_lib.load_checkpoint(_CHECKPOINT.value)
  config = encoder_lib.preset("trackstar")
  encoder = encoder_lib.from_checkpoint(loaded, config)
  max_len = loaded.model_config.max_len
  sequences = [
    data_lib.tokenize_text(loaded.tokenizer, e.text, max_len=max_len)
    for e in data_lib.read_corpus(_CORPUS.value)
  ]
  batches = [
    data_lib.pad_batch(sequences[i : i + _BATCH], seq_len=max_len)
    for i in range(0, len(sequences) - _BATCH + 1, _BATCH)
  ]
  encoder.features(batches[0]).features.block_until_ready()  # Compile.
  start = time.perf_counter()
  tokens = 0
  for batch in batches:
    out = encoder.features(batch)
    tokens += int(np.asarray(out.num_tokens).sum())
  return tokens / (time.perf_counter() - start), tokens


def main(argv):
  del argv
  bare, _ = bare_tokens_per_second()
  results = {"bare_tokens_per_second": bare, "runs": {}}
  with tempfile.TemporaryDirectory() as work:
    for text in _MULTIPLIERS.value:
      times = int(text)
      corpus = repeated_corpus(_CORPUS.value, times, work)
      walls, peaks = [], []
      for repeat in range(_REPEATS.value):
        store = os.path.join(work, f"store_x{times}_{repeat}")
        wall, peak = run_job(corpus, store)
        walls.append(wall)
        peaks.append(peak)
      with open(os.path.join(store, "manifest.json")) as f:
        tokens = json.load(f)["counts"]["tokens"]
      results["runs"][times] = {
        "seconds": statistics.median(walls),
        "peak_rss_mib": statistics.median(peaks),
        "tokens": tokens,
        "tokens_per_second": tokens / statistics.median(walls),
      }
  first = results["runs"][int(_MULTIPLIERS.value[0])]
  for run in results["runs"].values():
    run["time_ratio"] = run["seconds"] / first["seconds"]
    run["peak_ratio"] = run["peak_rss_mib"] / first["peak_rss_mib"]
    run["pipeline_over_bare"] = run["tokens_per_second"] / bare
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
