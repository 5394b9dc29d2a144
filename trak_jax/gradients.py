"""Per-example loss gradients, whole or as per-token factors.

For a weight matrix W (m x n) used as `y_t = x_t W` at every token t, the
per-example gradient is a sum of outer products (DESIGN.md section 1):

    ∇W = Σ_t a_t δ_tᵀ        a_t = x_t (input), δ_t = ∂L/∂y_t (output grad)

`per_example_factors` returns those per-token factors for every matrix
parameter (from the model's `layer_inputs` and `perturbations` records), and
plain per-example gradients for the remaining (vector) parameters. Nothing of
size m x n per example is formed: the backward pass differentiates the
activations only, never the weights.

Every matrix gradient is described by a list of `Term`s; a term is either
dense (`left` is [seq, m]) or a gather (`left` is [seq] row ids, as for an
embedding lookup). `materialize` turns terms back into ∇W, for paths that
need the whole gradient and for tests.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp

from trak_jax import model as model_lib

Path = tuple[str, ...]


class Term(NamedTuple):
  """One Σ_t left_t right_tᵀ contribution to a matrix gradient."""

  left: jax.Array  # [seq, m] float, or [seq] int32 row ids (a gather)
  right: jax.Array  # [seq, n] float

  @property
  def is_gather(self) -> bool:
    return jnp.issubdtype(self.left.dtype, jnp.integer)


class Factors(NamedTuple):
  """Per-example gradient, factored where it can be (leading axis: batch)."""

  matrices: dict[Path, list[Term]]  # matrix param path -> its terms
  vectors: dict[Path, jax.Array]  # other param path -> [batch, *shape] grad
  losses: jax.Array  # [batch] summed token loss


def flat_params(params: Any) -> dict[Path, jax.Array]:
  """{path tuple: array} of a nested parameter dict."""
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(params))


def matrix_paths(params: Any) -> list[Path]:
  """Parameters whose gradients the factor records cover (2-D weights)."""
  return [
    path
    for path in flat_params(params)
    if path[-1] in ("kernel", "embedding", "positions")
  ]


def _single_example_loss(model: model_lib.Transformer):
  def loss_fn(params, token_ids, loss_mask):
    losses = model_lib.example_losses(
      model, params, token_ids[None], loss_mask[None]
    )
    return losses[0]

  return loss_fn


def per_example_grads(
  model: model_lib.Transformer, params: Any, token_ids, loss_mask
) -> Any:
  """Whole per-example gradients, a pytree with a leading [batch] axis.

  The brute-force reference for everything factored; use it on small models.
  """
  grad_fn = jax.grad(_single_example_loss(model))
  return jax.vmap(grad_fn, in_axes=(None, 0, 0))(params, token_ids, loss_mask)


def _terms(
  path: Path,
  inputs: dict[Path, jax.Array],
  output_grads: dict[Path, jax.Array],
  token_ids: jax.Array,
) -> list[Term]:
  """The terms of one matrix parameter from the records of one example."""
  module, name = path[:-1], path[-1]
  if name == "kernel":
    return [Term(inputs[path][0], output_grads[path][0])]
  if name == "embedding":
    lookup, logits = module + ("lookup",), module + ("logits",)
    return [
      # Lookup: row id_t of E receives δ_t.
      Term(inputs[lookup][0], output_grads[lookup][0]),
      # Tied output layer: logits_t = E h_t, so ∇E += Σ_t δ_t h_tᵀ.
      Term(output_grads[logits][0], inputs[logits][0]),
    ]
  if name == "positions":
    # Row t of the position table is added to token t's embedding, so it
    # receives the same output gradient as the token lookup.
    lookup = ("embed", "lookup")
    seq = token_ids.shape[0]
    return [Term(jnp.arange(seq, dtype=jnp.int32), output_grads[lookup][0])]
  raise ValueError(f"no factor records for parameter {'/'.join(path)}")


def make_factor_fn(
  model: model_lib.Transformer, params: Any
) -> Callable[[Any, jax.Array, jax.Array], Factors]:
  """Returns `(params, token_ids, loss_mask) -> Factors` for a batch.

  Matrix parameters are held constant, so the backward pass computes only
  activation gradients (δ) and the vector parameters' gradients.
  """
  # A list, not a set: tracing in a fixed order gives the same program (and
  # persistent compilation cache key) in every process, whatever the hash
  # seed.
  matrix_order = list(matrix_paths(params))
  mats = set(matrix_order)

  def one_example(params, token_ids, loss_mask):
    flat = flat_params(params)
    vectors = {p: v for p, v in flat.items() if p not in mats}
    matrices = {p: v for p, v in flat.items() if p in mats}
    shapes = jax.eval_shape(model.init, jax.random.key(0), token_ids[None])
    zeros = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), shapes[model_lib.PERTURBATIONS]
    )

    def loss_fn(vector_params, perturbations):
      merged = flax.traverse_util.unflatten_dict({**matrices, **vector_params})
      logits, records = model.apply(
        {"params": merged, model_lib.PERTURBATIONS: perturbations},
        token_ids[None],
        mutable=[model_lib.LAYER_INPUTS],
      )
      losses = model_lib.token_losses(logits, token_ids[None], loss_mask[None])
      return losses.sum(), records[model_lib.LAYER_INPUTS]

    (loss, records), (vector_grads, output_grads) = _value_and_grads(
      loss_fn, vectors, zeros
    )
    inputs = flat_params(records)
    output_grads = flat_params(output_grads)
    terms = {
      p: _terms(p, inputs, output_grads, token_ids) for p in matrix_order
    }
    return terms, vector_grads, loss

  def factor_fn(params, token_ids, loss_mask) -> Factors:
    terms, vectors, losses = jax.vmap(one_example, in_axes=(None, 0, 0))(
      params, token_ids, loss_mask
    )
    return Factors(matrices=terms, vectors=vectors, losses=losses)

  return factor_fn


def _value_and_grads(loss_fn, vectors, zeros):
  (loss, records), grads = jax.value_and_grad(
    loss_fn, argnums=(0, 1), has_aux=True
  )(vectors, zeros)
  return (loss, records), grads


def materialize(terms: list[Term], shape: tuple[int, int]) -> jax.Array:
  """Σ over terms of Σ_t left_t right_tᵀ for one example: [m, n]."""
  grad = jnp.zeros(shape, terms[0].right.dtype)
  for term in terms:
    if term.is_gather:
      grad = grad.at[term.left].add(term.right)
    else:
      # [seq, m]ᵀ @ [seq, n] -> [m, n]
      grad = grad + term.left.T @ term.right
  return grad
