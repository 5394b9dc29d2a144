r"""Runs the fact-tracing evaluation on anyone's data.

  trak-jax-eval --corpus=corpus.jsonl --queries=queries.jsonl \
    [--checkpoint=model_dir] --output_dir=out/eval

Without --checkpoint, a model is trained on the corpus first with the gin
training config (`--gin_file`, default experiments/demo.gin) into
`<output_dir>/model`.
"""

import json

import gin
from absl import app, flags, logging

from pipelines import evaluate_lib, launch
from trak_jax import gin_utils, train

_CORPUS = flags.DEFINE_string("corpus", None, "Corpus spec.", required=True)
_QUERIES = flags.DEFINE_string("queries", None, "Query JSONL.", required=True)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Trained model; trained on the corpus if not given."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output.", required=True)
_DIM = flags.DEFINE_integer(
  "dim", None, "Projection dimension d (default: the projection's)."
)
_GROUP_BY = flags.DEFINE_list(
  "group_by", ["frequency_bucket"], "Query fields results are split by."
)
_MIX = flags.DEFINE_float(
  "hessian_mix", None, "TrackStar's λ (default: the k-th-eigenvalue rule)."
)
_TAILPATCH = flags.DEFINE_integer(
  "tailpatch_queries", None, "Queries scored by tail-patch (default all)."
)
_STEP_SIZE = flags.DEFINE_float(
  "tailpatch_step_size",
  None,
  "Learning rate of tail-patch's step (default: the checkpoint's final one; "
  "needed for an imported checkpoint without optimizer or --learning_rate).",
)
_VARIANTS = flags.DEFINE_list(
  "tailpatch_variants",
  ["checkpoint"],
  "Tail-patch steps: checkpoint, checkpoint_noclip, sgd (the first is the "
  "headline tail_patch column).",
)
_SCANN = flags.DEFINE_bool(
  "scann",
  True,
  "Also search TrackStar's store and Hessian through ScaNN (the row "
  "trackstar_scann); --noscann leaves it out.",
)
_RESUME = flags.DEFINE_bool(
  "resume",
  True,
  "Skip the steps (jobs, exact reference, tail-patch) that finished in an "
  "earlier run into --output_dir from the same inputs; --noresume reruns "
  "them all.",
)


def train_if_needed(output_dir: str) -> str:
  """The checkpoint to evaluate: given, or trained on the corpus from gin."""
  if _CHECKPOINT.value:
    return _CHECKPOINT.value
  model_dir = f"{output_dir}/model"
  gin_utils.parse(
    launch.GIN_FILES.value or ["experiments/demo.gin"],
    [
      f"train.train.corpus_path = '{_CORPUS.value}'",
      f"train.train.output_dir = '{model_dir}'",
      *launch.GIN_BINDINGS.value,
    ],
  )
  result = gin.get_configurable(train.train)()
  gin_utils.write_operative_config(model_dir)
  return result.output_dir


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  checkpoint = train_if_needed(_OUTPUT_DIR.value)
  results = evaluate_lib.evaluate(
    make_pipeline=lambda: launch.make_pipeline(),
    corpus=_CORPUS.value,
    queries=_QUERIES.value,
    checkpoint=checkpoint,
    output_dir=_OUTPUT_DIR.value,
    dim=_DIM.value,
    tailpatch_queries=_TAILPATCH.value,
    tailpatch_step_size=_STEP_SIZE.value,
    tailpatch_variants=tuple(_VARIANTS.value),
    hessian_mix=_MIX.value,
    group_by=_GROUP_BY.value,
    scann=_SCANN.value,
    resume=_RESUME.value,
  )
  print(json.dumps({"seconds": results["meta"]["seconds"]}))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
