r"""The Beam encode job against the bare encoder loop, and as the corpus grows.

  python bench/pipeline_scaling.py --checkpoint=out/demo/model \
    --corpus=out/demo/data/corpus.jsonl [--multipliers=1,2,4] [--repeats=3]

Runs, in order:
1. `cold`: one encode job on the 1x corpus with an empty JAX compilation
   cache, so its start-up compiles every program (what a first run on a
   fresh machine pays); it fills the cache the later jobs use.
2. `bare`: in this process, the encoder called in a plain loop on exactly
   the batches the job makes: the 1x corpus split into the job's shards,
   each shard deduplicated, tokenized and batched by `encode_lib` with the
   job's batch size and length buckets. One untimed call per batch shape
   first (compilation excluded); outputs are copied to host as the job does.
3. `repeats` times, for each corpus multiplier m (the corpus repeated m
   times under new ids): the bare loop, then an encode job
   (`pipelines.encode_main` in a subprocess on the DirectRunner, with the
   warm cache). Each job is compared with the bare loop just before it, and
   sizes with the 1x job of the same repeat, so that load from other
   processes falls on both sides alike; then the medians of the ratios.

Prints one JSON object. Per multiplier, medians over the repeats of:
- `seconds`: the job's wall time end to end (interpreter start, imports,
  pipeline construction, checkpoint restore, tracing, encoding, writing);
- `encode_stage_seconds`: the time inside EncodeShard (tokenize, encode,
  write; the job's `shard_ms` distribution), `setup_seconds` (checkpoint
  and matrices), `encoder_seconds` (the encoder calls alone) and
  `first_call_seconds` (the first call per batch shape: tracing, and the
  program from the cache, and that batch itself), a fixed cost like the
  start-up;
- `peak_rss_mib`: peak resident memory of the process tree (50 ms samples);
and the ratios the performance targets name: `time_ratio` and
`encode_stage_time_ratio` and `steady_encode_time_ratio` (the encode
stage less its first calls; against the first multiplier), `peak_ratio`,
`pipeline_over_bare` (end-to-end tokens/s over bare tokens/s),
`encode_stage_over_bare` and `steady_encode_over_bare`.

The default of 3 repeats keeps the run near 10 minutes on an idle 2-core
machine (each repeat runs 3 jobs with 7 corpus passes and 3 bare loops);
use --repeats=5 for medians of 5.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import gin
import numpy as np
import psutil
from absl import app, flags

from pipelines import encode_lib
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import encoder as encoder_lib
from trak_jax import gin_utils
from trak_jax import store as store_lib

_CHECKPOINT = flags.DEFINE_string("checkpoint", "out/demo/model", "Model.")
_CORPUS = flags.DEFINE_string(
  "corpus", "out/demo/data/corpus.jsonl", "Corpus to repeat."
)
_MULTIPLIERS = flags.DEFINE_list("multipliers", ["1", "2", "4"], "Sizes.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per size.")
_LENGTH_BUCKETS = flags.DEFINE_list(
  "length_buckets",
  ["16", "32", "48"],
  "The job's EncodeOptions.length_buckets.",
)
_BATCH = 32
_NUM_SHARDS = 4
_GIN_FILE = "runs/encoder.gin"


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


def run_job(corpus: str, output_dir: str, cache_dir: str) -> dict[str, float]:
  """Wall seconds, peak RSS MiB and stage seconds of one encode job."""
  command = [
    sys.executable,
    "-m",
    "pipelines.encode_main",
    f"--corpus={corpus}",
    f"--checkpoint={_CHECKPOINT.value}",
    f"--output_dir={output_dir}",
    f"--gin_file={_GIN_FILE}",
    f"--gin_bindings=encode_lib.EncodeOptions.batch_size = {_BATCH}",
    f"--gin_bindings=encode_lib.EncodeOptions.num_shards = {_NUM_SHARDS}",
    "--gin_bindings=encode_lib.EncodeOptions.length_buckets = "
    f"{tuple(int(n) for n in _LENGTH_BUCKETS.value)}",
    f"--compilation_cache_dir={cache_dir}",
  ]
  start = time.perf_counter()
  child = subprocess.Popen(
    command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
  )
  process, peak = psutil.Process(child.pid), 0
  while child.poll() is None:
    try:
      tree = [process, *process.children(recursive=True)]
      peak = max(peak, sum(p.memory_info().rss for p in tree))
    except psutil.Error:
      pass
    time.sleep(0.05)
  wall = time.perf_counter() - start
  stdout = child.stdout.read()
  if child.returncode:
    raise RuntimeError(f"encode job failed: {' '.join(command)}")
  # The job prints its metrics as the first JSON object.
  metrics, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{") :])
  stages = metrics["distributions"]
  with open(os.path.join(output_dir, "manifest.json")) as f:
    tokens = json.load(f)["counts"]["tokens"]
  return {
    "seconds": wall,
    "encode_stage_seconds": stages["shard_ms"]["sum"] / 1000,
    "setup_seconds": stages["setup_ms"]["sum"] / 1000,
    "encoder_seconds": stages["encoder_ms"]["sum"] / 1000,
    "first_call_seconds": stages["first_call_ms"]["sum"] / 1000,
    "steady_encode_seconds": (
      stages["shard_ms"]["sum"] - stages["first_call_ms"]["sum"]
    )
    / 1000,
    "peak_rss_mib": peak / 2**20,
    "tokens": tokens,
  }


def job_batches(tokenizer, max_len: int) -> list[data_lib.Batch]:
  """The batches the encode job makes of the 1x corpus, shard by shard."""
  shards: dict[int, list] = {}
  for source in data_lib.expand_sources(_CORPUS.value):
    for location, raw in data_lib.raw_corpus_records(source):
      parsed = encode_lib.parse_record(location, raw, num_shards=_NUM_SHARDS)
      if not isinstance(parsed, store_lib.Rejection):  # As the job does.
        shards.setdefault(parsed[0], []).append(parsed[1])
  batches = []
  for shard in sorted(shards):
    # The job's own deduplication.
    unique = encode_lib.unique(shards[shard], [])
    tokenized = encode_lib.tokenize_examples(
      tokenizer, unique, max_len=max_len, truncate=True, rejected=[]
    )
    batches.extend(
      planned.batch
      for planned in encode_lib.make_batches(
        tokenized,
        batch_size=_BATCH,
        max_len=max_len,
        length_buckets=[int(n) for n in _LENGTH_BUCKETS.value],
      )
    )
  return batches


def bare_loop(cache_dir: str):
  """A function that times the encoder in a plain loop over the job's
  batches, returning tokens/s; compilation happens here, untimed."""
  encode_lib.enable_compilation_cache(cache_dir)
  gin_utils.parse([_GIN_FILE], [])
  config = gin.get_configurable(encoder_lib.preset)()
  loaded = checkpoint_lib.load_checkpoint(_CHECKPOINT.value)
  batches = job_batches(loaded.tokenizer, loaded.model_config.max_len)
  encoder = encoder_lib.from_checkpoint(
    loaded, config, energy_batches=batches[:8]
  )
  for length in {b.token_ids.shape[1] for b in batches}:  # Compile.
    first = next(b for b in batches if b.token_ids.shape[1] == length)
    encoder_lib.host_features(encoder, first)

  def tokens_per_second() -> float:
    start = time.perf_counter()
    tokens = 0
    for batch in batches:
      out = encoder_lib.host_features(encoder, batch)
      tokens += int(np.asarray(out.num_tokens).sum())
    return tokens / (time.perf_counter() - start)

  return tokens_per_second


def main(argv):
  del argv
  multipliers = [int(text) for text in _MULTIPLIERS.value]
  with tempfile.TemporaryDirectory() as work:
    cache_dir = os.path.join(work, "jax_cache")
    corpora = {m: repeated_corpus(_CORPUS.value, m, work) for m in multipliers}
    cold_corpus = corpora.get(1) or repeated_corpus(_CORPUS.value, 1, work)
    cold = run_job(cold_corpus, os.path.join(work, "store_cold"), cache_dir)
    bare = bare_loop(cache_dir)
    runs: dict[int, list[dict[str, float]]] = {m: [] for m in multipliers}
    for repeat in range(_REPEATS.value):
      for m in multipliers:
        bare_rate = bare()  # Just before the job it is compared with.
        store = os.path.join(work, f"store_x{m}_{repeat}")
        runs[m].append(
          {**run_job(corpora[m], store, cache_dir), "bare": bare_rate}
        )
      for m in multipliers:
        _add_ratios(runs[m][-1], runs[multipliers[0]][-1])
  results = {
    "repeats": _REPEATS.value,
    "length_buckets": [int(n) for n in _LENGTH_BUCKETS.value],
    "bare_tokens_per_second": statistics.median(
      r["bare"] for m in multipliers for r in runs[m]
    ),
    "cold_start_1x": cold,
    "runs": {m: _medians(runs[m]) for m in multipliers},
  }
  print(json.dumps(results, indent=2))


def _add_ratios(run: dict[str, float], first: dict[str, float]) -> None:
  """The targets' ratios, within one repeat (same load on both sides)."""
  run["tokens_per_second"] = run["tokens"] / run["seconds"]
  run["time_ratio"] = run["seconds"] / first["seconds"]
  run["encode_stage_time_ratio"] = (
    run["encode_stage_seconds"] / first["encode_stage_seconds"]
  )
  run["steady_encode_time_ratio"] = (
    run["steady_encode_seconds"] / first["steady_encode_seconds"]
  )
  run["peak_ratio"] = run["peak_rss_mib"] / first["peak_rss_mib"]
  run["pipeline_over_bare"] = run["tokens_per_second"] / run["bare"]
  run["encode_stage_over_bare"] = (
    run["tokens"] / run["encode_stage_seconds"] / run["bare"]
  )
  run["steady_encode_over_bare"] = (
    run["tokens"] / run["steady_encode_seconds"] / run["bare"]
  )


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
  return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


if __name__ == "__main__":
  app.run(main)
