"""The TrackStar encoder: one jitted, sharded program per batch.

    g = ∇θ L(z)  ->  g' = g ⊘ sqrt(V + ε)  ->  φ = P g'          (features)
    G = R^(-1/2) φ  ->  Ḡ = G / ‖G‖                              (encode)

(DESIGN.md section 1.) `features` computes φ, what the corpus pass stores;
`encode` also applies the Hessian preconditioner and the normalisation when
the config asks for them. Queries (`encode_queries`, or `query=True`) are
corrected by the config's `query_correction`. The batch is sharded over
the mesh's `data` axis; the parameters keep the sharding they were loaded
with.

Per matrix parameter the encoder picks the cheapest exact path:

- factored: correction none, Adafactor-factored, or an elementwise V (Adam,
  estimated) approximated by its factors (`CorrectionSpec.factored`), with a
  Kronecker projection: Σ_t (P_L r⊙a_t)(P_R c⊙δ_t)ᵀ from per-token factors,
  no m x n gradient per example;
- materialised: elementwise correction (Adam, estimated), or a dense or no
  projection: ∇W is formed per example, `chunk_size` examples at a time.
"""

import dataclasses
import hashlib
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from trak_jax import capture, gradients, models, partitioning
from trak_jax import correction as correction_lib
from trak_jax import data as data_lib
from trak_jax import hessian as hessian_core
from trak_jax import projection as projection_lib

# Re-exported: callers spell them encoder.Fingerprint and
# encoder.FingerprintMismatchError.
from trak_jax.fingerprint import (  # noqa: F401
  Fingerprint,
  FingerprintMismatchError,
)


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Every stage of the encoder, each a switch (DESIGN.md, "Ablations").

  Attributes:
    correction: Optimizer second-moment correction of the corpus (what a
      store holds).
    query_correction: The correction of queries, or None for `correction`
      (both sides corrected). `trackstar_one_sided` leaves queries
      uncorrected: an optimizer step on a training example moves the
      parameters along V^(-1/2) g_train, so V^(-1/2) belongs on that side
      only. A store does not depend on it (its fingerprint leaves it out);
      R_eval, fitted from queries as they are encoded, does (hessian.json
      records it, `query_correction_json`).
    projection: Random projection.
    hessian: Task-specific Hessian approximation R (applied by `encode` once
      a preconditioner is fitted; see `trak_jax.hessian`).
    normalize: Unit-normalise the final encodings.
    chunk_size: Examples per chunk where a layer's gradient is materialised.
    dtype: Dtype of stored encodings, "float32" or "bfloat16".
  """

  correction: correction_lib.CorrectionSpec = correction_lib.CorrectionSpec()
  query_correction: correction_lib.CorrectionSpec | None = None
  projection: projection_lib.ProjectionSpec = projection_lib.ProjectionSpec()
  hessian: hessian_core.HessianSpec = hessian_core.HessianSpec()
  normalize: bool = True
  chunk_size: int = 8
  dtype: str = "float32"

  @property
  def query_correction_spec(self) -> correction_lib.CorrectionSpec:
    """The correction queries are encoded with."""
    if self.query_correction is None:
      return self.correction
    return self.query_correction

  @property
  def one_sided(self) -> bool:
    """Queries are corrected otherwise than the corpus."""
    return self.query_correction_spec != self.correction

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "EncoderConfig":
    """Inverse of `to_dict`; a dict from before `query_correction` existed
    has queries corrected as the corpus."""
    query = values.get("query_correction")
    return cls(
      correction=correction_lib.CorrectionSpec(**values["correction"]),
      query_correction=(
        None if query is None else correction_lib.CorrectionSpec(**query)
      ),
      projection=projection_lib.ProjectionSpec.from_dict(values["projection"]),
      # Configs recorded before eval_directions mixed in all of R_eval.
      hessian=hessian_core.HessianSpec(
        **{"eval_directions": "all", **values["hessian"]}
      ),
      normalize=values["normalize"],
      chunk_size=values["chunk_size"],
      dtype=values["dtype"],
    )


class Encoded(NamedTuple):
  features: jax.Array  # [batch, d] φ (or Ḡ from `encode`)
  losses: jax.Array  # [batch] summed token loss
  num_tokens: jax.Array  # [batch] tokens with loss weight
  finite: jax.Array  # [batch] bool, every feature finite


def _layout_digest(layout: projection_lib.Layout) -> str:
  text = json.dumps([list(b) for b in layout.blocks], default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _correction_json(spec: correction_lib.CorrectionSpec) -> str:
  """What a correction means, as JSON.

  Where a saved V lies is not what it means: its digest is. An elementwise
  V is what every fingerprint meant before `factored` existed, so only a
  factored one says so, and stores made before keep their fingerprint.
  """
  values = dataclasses.asdict(spec)
  del values["estimate_path"]
  if not spec.factored:
    del values["factored"]
  return json.dumps(values)


def query_correction_json(config: EncoderConfig) -> str | None:
  """What the queries' correction means, as JSON; None where it is the
  corpus's (every config from before `query_correction` existed).

  Not in the fingerprint, which says what a store's φ means: one store
  serves both sides' choices. A Hessian with R_eval records it, since its
  R_eval was fitted from queries encoded that way.
  """
  if not config.one_sided:
    return None
  return _correction_json(config.query_correction_spec)


def make_fingerprint(
  *,
  checkpoint_digest: str,
  config: EncoderConfig,
  layout: projection_lib.Layout,
) -> Fingerprint:
  """The fingerprint of φ made with `config` from a checkpoint."""
  return Fingerprint(
    checkpoint_digest=checkpoint_digest,
    correction=_correction_json(config.correction),
    projection=json.dumps(
      {
        **dataclasses.asdict(config.projection),
        "layout": _layout_digest(layout),
      }
    ),
    seed=config.projection.seed,
    dim=layout.dim,
    dtype=config.dtype,
  )


def fingerprint_for_checkpoint(path: str, config: EncoderConfig) -> Fingerprint:
  """The fingerprint an encoder would have, without loading parameters.

  Raises:
    projection.MissingEnergyError: If the layout waits for block energies
      (`with_block_energy`, `with_recorded_layout`).
  """
  from trak_jax import checkpoint as checkpoint_lib

  header = checkpoint_lib.read_header(path)
  layout = model_layout(header.model_config, config.projection)
  return make_fingerprint(
    checkpoint_digest=header.digest, config=config, layout=layout
  )


def model_layout(
  model_config: models.ModelConfig, spec: projection_lib.ProjectionSpec
) -> projection_lib.Layout:
  """The projection layout of a checkpoint's model, computing nothing."""
  shapes = models.abstract_params(model_config)
  views = capture.matrix_views(models.apply_fn(model_config), shapes)
  return projection_lib.make_layout(spec, shapes, views)


class TrackStarEncoder:
  """Encodes batches of examples or queries with one checkpoint.

  Args:
    params: Model parameters (sharded on `mesh` as loaded).
    apply_fn: (params, token_ids [batch, seq]) -> logits [batch, seq,
      vocab], any Flax model (`trak_jax.capture` finds its weights).
    config: The encoder's stages.
    correction: Per-parameter corrections (see `trak_jax.correction`). With
      `config.correction.factored`, the elementwise V of every captured
      matrix is replaced by its factored approximation
      (`correction.factorize`).
    checkpoint_digest: Digest of the checkpoint, for the fingerprint.
    mesh: The mesh; the batch is sharded over its `data` axis.
    preconditioner: R^(-1/2) for `encode`, or None.
    query_correction: Per-parameter corrections of queries
      (`config.query_correction`, factored as `correction` is); None for
      `correction`'s, or, for a query correction "none", the identity.

  Raises:
    ValueError: If `config.query_correction` needs optimizer statistics
      and no `query_correction` is given.
  """

  def __init__(
    self,
    *,
    params: Any,
    apply_fn: capture.ApplyFn,
    config: EncoderConfig,
    correction: correction_lib.Correction,
    checkpoint_digest: str,
    mesh: Mesh,
    preconditioner: hessian_core.Preconditioner | None = None,
    query_correction: correction_lib.Correction | None = None,
  ):
    self.params = params
    self.apply_fn = apply_fn
    self.config = config
    self.mesh = mesh
    self.views = capture.matrix_views(apply_fn, params)
    self.layout = projection_lib.make_layout(
      config.projection, params, self.views
    )
    self.matrices = projection_lib.make_matrices(config.projection, self.layout)
    if config.correction.factored:
      correction = correction_lib.factorize(correction, self.views)
    self.correction = correction
    self.query_correction = _query_correction(
      config, correction, query_correction, params, self.views
    )
    self.preconditioner = preconditioner
    self.fingerprint = make_fingerprint(
      checkpoint_digest=checkpoint_digest, config=config, layout=self.layout
    )
    self._factor_fn = gradients.make_factor_fn(apply_fn, params, self.views)
    self._features = self._compile(finalize=False)
    self._encode = self._compile(finalize=True)

  @classmethod
  def for_module(
    cls,
    module: Any,
    params: Any,
    *,
    config: EncoderConfig,
    opt_state: Any = None,
    apply_fn: capture.ApplyFn | None = None,
    mesh: Mesh | None = None,
    estimation_batches: Any = None,
    energy_batches: Any = None,
    preconditioner: hessian_core.Preconditioner | None = None,
  ) -> "TrackStarEncoder":
    """An encoder for any Flax linen causal LM, unchanged.

    Its nn.Dense, nn.DenseGeneral and nn.Embed weights (lookups and `attend`
    as a tied head) take the factored path; every other parameter is
    differentiated whole (`trak_jax.capture`).

    Args:
      module: The `flax.linen.Module`; `module.apply({"params": params},
        token_ids)` must give [batch, seq, vocab] next-token logits, unless
        `apply_fn` says how.
      params: Its parameters (the `params` collection, unboxed). Placed
        arrays keep their sharding; others are replicated on `mesh`.
      config: The encoder's stages; its correction reads `opt_state`.
      opt_state: The optax state the model was trained with (Adam's `nu`,
        Adafactor's `v_row`/`v_col`/`v`), for corrections "adam" and
        "adafactor".
      apply_fn: (params, token_ids) -> logits, if the module is called
        another way.
      mesh: The mesh (default: every device on the `data` axis).
      estimation_batches: For correction "estimated" with no saved V:
        `data_lib.Batch`es whose per-example gradients estimate V.
      energy_batches: `data_lib.Batch`es measuring an energy layout.
      preconditioner: R^(-1/2), if already fitted.

    Raises:
      correction.MissingOptimizerStateError: If `opt_state` lacks what the
        correction needs.
    """
    if apply_fn is None:
      apply_fn = lambda p, ids: module.apply({"params": p}, ids)  # noqa: E731
    if mesh is None:
      mesh = partitioning.make_mesh()
    params = jax.tree.map(
      lambda x: (
        x
        if isinstance(getattr(x, "sharding", None), jax.sharding.NamedSharding)
        else jax.device_put(x, partitioning.replicated(mesh))
      ),
      params,
    )
    fix = _correction(
      config.correction, opt_state, params, apply_fn, estimation_batches
    )
    query_fix = _correction_of_queries(config, fix, opt_state, params)
    from trak_jax import checkpoint as checkpoint_lib

    digest = checkpoint_lib.params_digest(params)
    if config.projection.needs_energy and energy_batches is not None:
      probe = cls(
        params=params,
        apply_fn=apply_fn,
        config=_probe_config(config),
        correction=fix,
        checkpoint_digest=digest,
        mesh=mesh,
      )
      config = with_block_energy(config, _shares(probe, energy_batches))
    return cls(
      params=params,
      apply_fn=apply_fn,
      config=config,
      correction=fix,
      checkpoint_digest=digest,
      mesh=mesh,
      preconditioner=preconditioner,
      query_correction=query_fix,
    )

  @property
  def dim(self) -> int:
    return self.layout.dim

  def with_preconditioner(
    self, preconditioner: hessian_core.Preconditioner | None
  ) -> "TrackStarEncoder":
    """The same encoder with another R^(-1/2) (shares nothing mutable)."""
    return TrackStarEncoder(
      params=self.params,
      apply_fn=self.apply_fn,
      config=self.config,
      correction=self.correction,
      checkpoint_digest=self.fingerprint.checkpoint_digest,
      mesh=self.mesh,
      preconditioner=preconditioner,
      query_correction=self.query_correction,
    )

  def _side(self, query: bool) -> correction_lib.Correction:
    return self.query_correction if query else self.correction

  def features(self, batch: data_lib.Batch, *, query: bool = False) -> Encoded:
    """φ = P (g ⊘ sqrt(V + ε)) per example: [batch, d].

    With `query`, the batch holds queries, corrected by the config's
    `query_correction` (the program is the same; a correction of another
    structure traces it once more).
    """
    return self._features(
      self.params, self.matrices, self._side(query), None, batch
    )

  def lower_features(
    self, batch: data_lib.Batch, *, query: bool = False
  ) -> jax.stages.Lowered:
    """The `features` program lowered for `batch`'s shapes.

    For cost and memory analysis, e.g.
    `encoder.lower_features(batch).compile().memory_analysis()`.
    """
    return self._features.lower(
      self.params, self.matrices, self._side(query), None, batch
    )

  def encode(self, batch: data_lib.Batch, *, query: bool = False) -> Encoded:
    """Final encodings: φ, then R^(-1/2) and normalisation as configured.

    With `query`, φ of queries (see `features`).
    """
    if self.config.hessian.kind != "none" and self.preconditioner is None:
      raise ValueError(
        f"hessian '{self.config.hessian.kind}' is configured but no "
        "preconditioner was fitted; fit one with trak_jax.hessian"
      )
    return self._encode(
      self.params,
      self.matrices,
      self._side(query),
      self.preconditioner,
      batch,
    )

  def _compile(self, *, finalize: bool):
    def program(params, matrices, correction, preconditioner, batch):
      phi, losses = self._phi(params, matrices, correction, batch)
      if finalize:
        phi = finish(
          phi,
          preconditioner,
          normalize=self.config.normalize,
        )
      num_tokens = batch.loss_mask[:, 1:].sum(axis=-1)
      finite = jnp.all(jnp.isfinite(phi), axis=-1) & jnp.isfinite(losses)
      phi = phi.astype(jnp.dtype(self.config.dtype))
      return Encoded(phi, losses, num_tokens, finite)

    rows = partitioning.batch_sharding(self.mesh, 1)
    return jax.jit(
      program,
      in_shardings=(
        partitioning.tree_shardings(self.params),
        None,
        None,
        None,
        data_lib.Batch(
          partitioning.batch_sharding(self.mesh),
          partitioning.batch_sharding(self.mesh),
        ),
      ),
      out_shardings=Encoded(
        partitioning.batch_sharding(self.mesh), rows, rows, rows
      ),
    )

  def _phi(self, params, matrices, correction, batch):
    """[batch, d] corrected, projected gradients, and [batch] losses."""
    factors = self._factor_fn(params, batch.token_ids, batch.loss_mask)
    spec = self.config.projection
    pieces = []
    for block in self.layout.blocks:
      if block.path == projection_lib.VECTORS:
        continue
      terms = factors.matrices[block.path]
      fix = correction[block.path]
      if spec.kind == "kronecker" and not isinstance(
        fix, correction_lib.Elementwise
      ):
        terms = [correction_lib.apply_to_term(fix, t) for t in terms]
        pieces.append(
          projection_lib.kronecker_terms(
            terms,
            matrices.left[block.path],
            matrices.right[block.path],
            sketches=block.terms,
          )
        )
      else:
        pieces.append(self._materialized(block, terms, fix, matrices))
    if self.layout.vector_paths:
      vectors = jnp.concatenate(
        [
          correction_lib.apply_to_gradient(
            correction[p], factors.vectors[p]
          ).reshape(batch.token_ids.shape[0], -1)
          for p in self.layout.vector_paths
        ],
        axis=-1,
      )
      pieces.append(projection_lib.project_vectors(spec, matrices, vectors))
    return jnp.concatenate(pieces, axis=-1), factors.losses

  def _materialized(self, block, terms, fix, matrices):
    """Forms ∇W per example, `chunk_size` at a time, then projects it."""
    spec = self.config.projection
    fix = correction_lib.as_matrix(fix, block.in_shape)

    def one(example_terms):
      grad = gradients.materialize(example_terms, block.in_shape)
      grad = correction_lib.apply_to_gradient(fix, grad)
      return projection_lib.project_matrix(spec, block, matrices, grad)

    return jax.lax.map(one, terms, batch_size=self.config.chunk_size)


def _query_correction(config, correction, given, params, views):
  """The queries' per-parameter corrections (see `TrackStarEncoder`)."""
  if not config.one_sided:
    return correction
  spec = config.query_correction_spec
  if given is None:
    if spec.kind != "none":
      raise ValueError(
        f"query correction '{spec.kind}' needs its statistics: give "
        "query_correction (from_checkpoint reads them)"
      )
    given = correction_lib.identity(params)
  if spec.factored:
    given = correction_lib.factorize(given, views)
  return given


def finish(
  phi: jax.Array,
  preconditioner: hessian_core.Preconditioner | None,
  *,
  normalize: bool,
) -> jax.Array:
  """G = R^(-1/2) φ, then Ḡ = G / ‖G‖ (DESIGN.md section 1)."""
  if preconditioner is not None:
    phi = hessian_core.apply(preconditioner, phi)
  if normalize:
    norms = jnp.linalg.norm(phi, axis=-1, keepdims=True)
    phi = phi / jnp.maximum(norms, jnp.finfo(phi.dtype).tiny)
  return phi


def host_features(
  encoder: TrackStarEncoder, batch: data_lib.Batch, *, query: bool = False
) -> Encoded:
  """`encoder.features(batch, query=query)` copied to host numpy arrays."""
  return Encoded(*(np.asarray(x) for x in encoder.features(batch, query=query)))


def host_encodings(
  encoder: TrackStarEncoder, batch: data_lib.Batch, *, query: bool = False
) -> Encoded:
  """`encoder.encode(batch, query=query)` copied to host numpy arrays."""
  return Encoded(*(np.asarray(x) for x in encoder.encode(batch, query=query)))


def from_checkpoint(
  checkpoint: Any,
  config: EncoderConfig,
  *,
  estimation_batches: Any = None,
  energy_batches: Any = None,
  preconditioner: hessian_core.Preconditioner | None = None,
) -> TrackStarEncoder:
  """Builds an encoder from a loaded `trak_jax.checkpoint.Checkpoint`.

  Args:
    checkpoint: The loaded checkpoint; its mesh is the encoder's.
    config: The encoder's stages.
    estimation_batches: For correction "estimated" with no saved V
      (`CorrectionSpec.estimate_path`): an iterable of `data_lib.Batch`
      whose per-example gradients estimate V.
    energy_batches: For a projection layout that waits for measured block
      energies (`ProjectionSpec.allocation` "energy"): `data_lib.Batch`es of
      corpus examples to measure them on (`block_shares`).
    preconditioner: R^(-1/2), if already fitted.

  Returns:
    The encoder.

  Raises:
    correction.MissingOptimizerStateError: If the checkpoint lacks the
      statistics the correction needs.
    projection.MissingEnergyError: If the layout needs energies and no
      `energy_batches` are given.
  """
  if config.projection.needs_energy and energy_batches is not None:
    config = with_block_energy(
      config, block_shares(checkpoint, config, energy_batches)
    )
  params = checkpoint.params
  mesh = jax.tree.leaves(params)[0].sharding.mesh
  apply_fn = models.apply_fn(checkpoint.model_config)
  fix = _correction(
    config.correction,
    checkpoint.opt_state,
    params,
    apply_fn,
    estimation_batches,
  )
  return TrackStarEncoder(
    params=params,
    apply_fn=apply_fn,
    config=config,
    correction=fix,
    checkpoint_digest=checkpoint.digest,
    mesh=mesh,
    preconditioner=preconditioner,
    query_correction=_correction_of_queries(
      config, fix, checkpoint.opt_state, params
    ),
  )


def _correction_of_queries(config, correction, opt_state, params):
  """The queries' correction, None where it is `correction` (the corpus's).

  An estimated one is the saved V (`estimate_path`).
  """
  if not config.one_sided:
    return None
  return correction_lib.from_checkpoint(
    config.query_correction_spec, opt_state, params
  )


def _correction(spec, opt_state, params, apply_fn, estimation_batches):
  """The correction of `spec`: from the optimizer state, or estimated."""
  if spec.kind != "estimated" or estimation_batches is None:
    # An estimated V without batches is the saved one (`estimate_path`).
    return correction_lib.from_checkpoint(spec, opt_state, params)
  grad_fn = jax.jit(
    lambda p, ids, mask: gradients.per_example_grads(apply_fn, p, ids, mask)
  )
  # Padded rows (no loss tokens) have zero gradients and do not count.
  return correction_lib.estimate(
    (
      (
        grad_fn(params, b.token_ids, b.loss_mask),
        int((np.asarray(b.loss_mask)[:, 1:].sum(-1) > 0).sum()),
      )
      for b in estimation_batches
    ),
    params,
    epsilon=spec.epsilon,
  )


def estimated_correction(
  checkpoint: Any, spec: correction_lib.CorrectionSpec, batches: Any
) -> correction_lib.Correction:
  """V estimated from `batches` of a checkpoint's per-example gradients."""
  return _correction(
    spec,
    None,
    checkpoint.params,
    models.apply_fn(checkpoint.model_config),
    batches,
  )


def block_shares(
  checkpoint: Any, config: EncoderConfig, batches: Any
) -> dict[str, float]:
  """Each projection block's mean share of an example's squared gradient.

  Estimated from a projection with the "equal" allocation at the same d (a
  projected block's squared norm is an unbiased estimate of the block's
  own), with `config`'s correction.

  Args:
    checkpoint: The loaded checkpoint.
    config: The encoder config.
    batches: `data_lib.Batch`es; padded rows (no loss tokens) and rows with
      non-finite gradients are left out.

  Returns:
    Block name (`projection.block_name`) -> mean share; shares sum to 1.

  Raises:
    ValueError: If no row of `batches` counts.
  """
  return _shares(from_checkpoint(checkpoint, _probe_config(config)), batches)


def _probe_config(config: EncoderConfig) -> EncoderConfig:
  """`config` with the equal layout and no Hessian, to measure energies.

  Queries are measured with the corpus's correction too: the layout is the
  store's, shared by every query correction that reads it.
  """
  return dataclasses.replace(
    config,
    query_correction=None,
    projection=dataclasses.replace(
      config.projection, allocation="equal", block_energy=None
    ),
    hessian=dataclasses.replace(config.hessian, kind="none"),
  )


def _shares(encoder: "TrackStarEncoder", batches: Any) -> dict[str, float]:
  totals, count = np.zeros(len(encoder.layout.blocks)), 0
  for batch in batches:
    out = host_features(encoder, batch)
    keep = (out.num_tokens > 0) & out.finite
    squares = np.stack(
      [
        (out.features[keep, b.offset : b.offset + b.size] ** 2).sum(-1)
        for b in encoder.layout.blocks
      ],
      axis=-1,
    )  # [examples, blocks]
    squares = squares[squares.sum(-1) > 0]
    totals += (squares / squares.sum(-1, keepdims=True)).sum(0)
    count += squares.shape[0]
  if not count:
    raise ValueError("no example to measure the projection's energies on")
  return {
    projection_lib.block_name(b.path): float(t / count)
    for b, t in zip(encoder.layout.blocks, totals, strict=True)
  }


def with_block_energy(
  config: EncoderConfig,
  corpus_shares: dict[str, float],
  query_shares: dict[str, float] | None = None,
) -> EncoderConfig:
  """`config` with its layout's block energies set from measured shares.

  The error variance of a projected query-passage inner product is
  Σ_b E[q_b²] E[z_b²] / k_b (unit-normalised q, z; dense Gaussian blocks), so
  the dims that minimise it are k_b ∝ sqrt(query share · corpus share). With
  no queries the corpus stands for both sides. Shares are rounded to 6
  digits, so the layout is reproducible from what the manifest records.
  """
  query_shares = query_shares or corpus_shares
  weights = {
    name: float(np.sqrt(share * query_shares[name]))
    for name, share in corpus_shares.items()
  }
  total = sum(weights.values()) or 1.0
  energy = tuple(
    (name, round(weight / total, 6)) for name, weight in weights.items()
  )
  return dataclasses.replace(
    config,
    projection=dataclasses.replace(config.projection, block_energy=energy),
  )


def with_recorded_layout(
  config: EncoderConfig, recorded: dict[str, Any]
) -> EncoderConfig:
  """`config` with what a store or index measured for it.

  A config whose projection still waits for measured energies takes them
  from `recorded` (an `EncoderConfig.to_dict()` from a manifest), and an
  "estimated" correction (or query correction) with no saved V takes the
  store's; any other setting is kept. A fingerprint check then compares
  the rest, so a store made with another projection or V is still refused
  by name.
  """
  if config.projection.needs_energy:
    theirs = projection_lib.ProjectionSpec.from_dict(recorded["projection"])
    if theirs.block_energy is not None:
      config = dataclasses.replace(
        config,
        projection=dataclasses.replace(
          config.projection, block_energy=theirs.block_energy
        ),
      )
  theirs = correction_lib.CorrectionSpec(**recorded["correction"])
  query = config.query_correction
  return dataclasses.replace(
    config,
    correction=_with_saved_estimate(config.correction, theirs),
    query_correction=(
      None if query is None else _with_saved_estimate(query, theirs)
    ),
  )


def _with_saved_estimate(
  mine: correction_lib.CorrectionSpec, theirs: correction_lib.CorrectionSpec
) -> correction_lib.CorrectionSpec:
  """`mine`, an "estimated" one with no saved V taking `theirs`'s."""
  if mine.kind != "estimated" or mine.estimate_path is not None:
    return mine
  if theirs.kind != "estimated" or theirs.estimate_path is None:
    return mine
  return dataclasses.replace(
    mine,
    estimate_path=theirs.estimate_path,
    estimate_digest=theirs.estimate_digest,
  )


def preset(
  name: str,
  *,
  correction: str = "adafactor",
  factored: bool = False,
  projection: projection_lib.ProjectionSpec | None = None,
  hessian: hessian_core.HessianSpec | None = None,
) -> EncoderConfig:
  """The methods the paper compares, as configurations of one encoder.

  - grad_dot: TracIn at one checkpoint: no correction, no R, no norm.
  - grad_dot_corrected: grad_dot with the optimizer correction on both
    sides (no R, no norm): g_q · V⁻¹ g_train.
  - grad_cos: normalisation only.
  - trak_like: R_train, no correction, no norm. (Without normalisation,
    R^(-1/2) on both sides gives the same scores as a one-sided R⁻¹.)
  - trackstar: correction, mixed R, normalisation.
  - trackstar_one_sided: trackstar with the correction on the training
    side only, as an optimizer step applies it (Adam, Adafactor: θ moves
    along V^(-1/2) g_train, so a query's loss changes by g_q · V^(-1/2)
    g_train to first order). The store is trackstar's; queries are
    projected uncorrected, so R_eval is fitted from uncorrected φ_q and
    R_train from the corrected store.
  - trackstar_no_correction / _no_hessian / _no_norm: one component off.

  Args:
    name: One of `PRESETS`.
    correction: The correction TrackStar uses ("adafactor", "adam",
      "estimated").
    factored: Approximate an "adam" or "estimated" V by its factors
      (`CorrectionSpec.factored`).
    projection: Projection (default `ProjectionSpec()`).
    hessian: The mixed Hessian of TrackStar (default `HessianSpec()`).

  Returns:
    The encoder config.
  """
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")
  projection = projection or projection_lib.ProjectionSpec()
  mixed = hessian or hessian_core.HessianSpec()
  fixed = correction_lib.CorrectionSpec(kind=correction, factored=factored)
  plain = correction_lib.CorrectionSpec(kind="none")
  none = dataclasses.replace(mixed, kind="none")
  train_only = dataclasses.replace(mixed, kind="train")
  table = {
    "grad_dot": (plain, none, False),
    "grad_dot_corrected": (fixed, none, False),
    "grad_cos": (plain, none, True),
    "trak_like": (plain, train_only, False),
    "trackstar": (fixed, mixed, True),
    "trackstar_one_sided": (fixed, mixed, True),
    "trackstar_no_correction": (plain, mixed, True),
    "trackstar_no_hessian": (fixed, none, True),
    "trackstar_no_norm": (fixed, mixed, False),
  }
  fix, hess, normalize = table[name]
  return EncoderConfig(
    correction=fix,
    query_correction=plain if name == "trackstar_one_sided" else None,
    projection=projection,
    hessian=hess,
    normalize=normalize,
  )


PRESETS = (
  "grad_dot",
  "grad_dot_corrected",
  "grad_cos",
  "trak_like",
  "trackstar",
  "trackstar_one_sided",
  "trackstar_no_correction",
  "trackstar_no_hessian",
  "trackstar_no_norm",
)


def encode_queries(
  encoder: TrackStarEncoder,
  tokenizer: Any,
  queries: Any,
  *,
  batch_size: int,
  max_len: int,
  finished: bool = True,
) -> Encoded:
  """Encodes queries (loss on the target given the prompt) to host arrays.

  Args:
    encoder: The encoder.
    tokenizer: The checkpoint's tokenizer.
    queries: `trak_jax.data.Query`s.
    batch_size: Queries per call; the last batch is padded to it.
    max_len: Tokens per query.
    finished: Apply R^(-1/2) and normalisation (`encode`), or return φ.
      Either way with the config's query correction.

  Returns:
    [queries, d] features and per-query losses, token counts, finiteness.
  """
  run = host_encodings if finished else host_features
  parts = []
  for start in range(0, len(queries), batch_size):
    chunk = queries[start : start + batch_size]
    sequences = [
      data_lib.tokenize_query(tokenizer, q.prompt, q.target, max_len=max_len)
      for q in chunk
    ]
    batch = data_lib.pad_batch(sequences, seq_len=max_len, num_rows=batch_size)
    out = run(encoder, batch, query=True)
    parts.append(Encoded(*(x[: len(chunk)] for x in out)))
  return Encoded(*(np.concatenate(xs) for xs in zip(*parts, strict=True)))
