r"""Runs the fact-tracing evaluation on anyone's data.

  trak-jax-eval --corpus=corpus.jsonl --queries=queries.jsonl \
    [--checkpoint=model_dir] --output_dir=out/eval

Options from gin/runs/eval.gin (the projection and TrackStar's Hessian:
runs/encoder.gin), then --gin_file and --gin_bindings, e.g.
`--gin_bindings="evaluate_lib.EvaluateOptions.tailpatch_queries = 100"` or
`--gin_bindings="projection.ProjectionSpec.dim = 65536"`; `<output_dir>/
config.gin` records them. Without --checkpoint, a model is trained on the
corpus first into `<output_dir>/model`, from experiments/demo.gin (parsed
first, so a training config among --gin_file overrides it).
"""

import json

import gin
from absl import app, flags, logging

from pipelines import evaluate_lib, launch
from trak_jax import gin_utils

_CORPUS = flags.DEFINE_string("corpus", None, "Corpus spec.", required=True)
_QUERIES = flags.DEFINE_string("queries", None, "Query JSONL.", required=True)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Trained model; trained on the corpus if not given."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output.", required=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  output_dir = _OUTPUT_DIR.value
  model_dir = f"{output_dir}/model"
  checkpoint = _CHECKPOINT.value
  if checkpoint:
    launch.parse_gin("eval")
  else:
    launch.parse_gin(
      "eval",
      before=[launch.TRAINING_GIN_FILE],
      bindings=launch.training_bindings(_CORPUS.value, model_dir),
    )
    checkpoint = launch.train_from_gin(model_dir).output_dir
  options = gin.get_configurable(evaluate_lib.EvaluateOptions)(
    corpus=_CORPUS.value,
    queries=_QUERIES.value,
    checkpoint=checkpoint,
    output_dir=output_dir,
  )
  gin_utils.write_operative_config(output_dir)
  results = evaluate_lib.evaluate(options, make_pipeline=launch.make_pipeline)
  print(json.dumps({"seconds": results["meta"]["seconds"]}))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
