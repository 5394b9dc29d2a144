"""trak_jax: TrackStar training-data attribution with JAX, Beam and ScaNN.

The public API, re-exported so users write `trak_jax.TrackStarEncoder`.
"""

from trak_jax import hf, mesh_search
from trak_jax.checkpoint import Checkpoint, CheckpointWriter, load_checkpoint
from trak_jax.correction import CorrectionSpec, MissingOptimizerStateError
from trak_jax.data import (
  Batch,
  CorpusExample,
  MalformedInputError,
  Query,
  read_corpus,
  read_queries,
)
from trak_jax.encoder import (
  PRESETS,
  EncoderConfig,
  Fingerprint,
  FingerprintMismatchError,
  TrackStarEncoder,
  encode_queries,
  preset,
)
from trak_jax.encoder import from_checkpoint as encoder_from_checkpoint
from trak_jax.hessian import HessianSpec
from trak_jax.index import Index, ScannSpec
from trak_jax.model import ModelConfig, Transformer
from trak_jax.models import logits
from trak_jax.optimizer import OptimizerConfig
from trak_jax.partitioning import make_mesh
from trak_jax.projection import ProjectionSpec
from trak_jax.scoring import top_k
from trak_jax.store import EncodingStore, StoreError
from trak_jax.train import TrainConfig
from trak_jax.train import train as train_model

__all__ = [
  "PRESETS",
  "Batch",
  "Checkpoint",
  "CheckpointWriter",
  "CorpusExample",
  "CorrectionSpec",
  "EncoderConfig",
  "EncodingStore",
  "Fingerprint",
  "FingerprintMismatchError",
  "HessianSpec",
  "Index",
  "MalformedInputError",
  "MissingOptimizerStateError",
  "ModelConfig",
  "OptimizerConfig",
  "ProjectionSpec",
  "Query",
  "ScannSpec",
  "StoreError",
  "TrackStarEncoder",
  "TrainConfig",
  "Transformer",
  "encode_queries",
  "encoder_from_checkpoint",
  "hf",
  "load_checkpoint",
  "logits",
  "make_mesh",
  "mesh_search",
  "preset",
  "read_corpus",
  "read_queries",
  "top_k",
  "train_model",
]
