r"""`make demo`: the whole job on the bundled fact-tracing data.

  python -m pipelines.demo_main --output_dir=out/demo

Configured by experiments/demo.gin (training) and gin/runs/demo.gin (the
evaluation), then --gin_file and --gin_bindings.

Steps (the data and the model are reused when they already exist):
1. generate the FactBench demo corpus and queries (`<out>/data/`);
2. train the demo model from `gin/experiments/demo.gin` (`<out>/model/`);
3. report how many queries the model answers, overall and per frequency
   bucket (`<out>/model/fact_accuracy.json`);
4. run the fact-tracing evaluation (`pipelines.evaluate_lib`): encode the
   corpus with the Beam job, fit the Hessians, build the indexes, retrieve
   with every method, add BM25, tail-patch, and write `<out>/eval/`
   (results.md, results.json, report.html, plots).
"""

import json
import os
import time

import gin
from absl import app, flags, logging

from pipelines import evaluate_lib, launch
from trak_jax import checkpoint as checkpoint_lib
from trak_jax import data as data_lib
from trak_jax import gin_utils, predict
from trak_jax.eval import factbench

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/demo", "Output root.")


def generate_data(output_dir: str) -> dict[str, str]:
  """Writes the demo FactBench files unless they exist; returns their paths."""
  data_dir = os.path.join(output_dir, "data")
  paths = {
    name: os.path.join(data_dir, f"{name}.jsonl")
    for name in ("corpus", "queries", "facts")
  }
  if not all(os.path.exists(p) for p in paths.values()):
    bench = factbench.generate(factbench.FactBenchConfig.demo())
    factbench.write_jsonl(bench, data_dir)
  return paths


def fact_accuracy(checkpoint_path: str, queries_path: str) -> dict:
  """Share of queries whose target the model ranks first, per bucket."""
  loaded = checkpoint_lib.load_checkpoint(checkpoint_path)
  queries = data_lib.read_queries(queries_path)
  answers = predict.answer_queries(
    loaded.params, loaded.model_config, loaded.tokenizer, queries
  )
  buckets = [q.extra.get("frequency_bucket", "all") for q in queries]
  return predict.accuracy_by_group(answers.correct, buckets)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  out = _OUTPUT_DIR.value
  paths = generate_data(out)
  model_dir = os.path.join(out, "model")
  launch.parse_gin(
    "demo",
    before=[launch.TRAINING_GIN_FILE],
    bindings=launch.training_bindings(paths["corpus"], model_dir),
  )
  start = time.perf_counter()
  result = launch.train_from_gin(model_dir)
  accuracy = fact_accuracy(result.checkpoint_path, paths["queries"])
  with open(os.path.join(model_dir, "fact_accuracy.json"), "w") as f:
    json.dump(accuracy, f, indent=2)
  print(f"checkpoint: {result.checkpoint_path}")
  print(
    f"training: {result.steps} steps in {result.seconds:.0f} s, "
    f"final loss {result.final_loss:.3f} "
    f"(total {time.perf_counter() - start:.0f} s)"
  )
  print("queries answered correctly (greedy continuation == target):")
  for group, row in sorted(accuracy.items()):
    print(f"  {group:>6}: {row['accuracy']:.3f} of {row['queries']}")
  options = gin.get_configurable(evaluate_lib.EvaluateOptions)(
    corpus=paths["corpus"],
    queries=paths["queries"],
    checkpoint=result.output_dir,
    output_dir=os.path.join(out, "eval"),
  )
  gin_utils.write_operative_config(options.output_dir)
  results = evaluate_lib.evaluate(options, make_pipeline=launch.make_pipeline)
  print(
    f"demo finished in {time.perf_counter() - start:.0f} s "
    f"(evaluation {results['meta']['seconds']:.0f} s)"
  )


if __name__ == "__main__":
  app.run(main)
