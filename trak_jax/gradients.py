"""Per-example loss gradients, whole or as per-token factors.

For a weight matrix W (m x n) used as `y_t = x_t W` at every token t, the
per-example gradient is a sum of outer products (DESIGN.md section 1):

    ∇W = Σ_t a_t δ_tᵀ        a_t = x_t (input), δ_t = ∂L/∂y_t (output grad)

`make_factor_fn` returns those per-token factors for every weight that
`trak_jax.capture` finds used as a matrix (nn.Dense, nn.DenseGeneral,
nn.Embed and its `attend`, in any Flax model), and plain per-example
gradients for the remaining parameters (biases, norms, weights used any
other way). Nothing of size m x n per example is formed: the backward pass
differentiates the activations only, never the weights.

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

from trak_jax import capture
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


def _single_example_loss(apply_fn: capture.ApplyFn):
  def loss_fn(params, token_ids, loss_mask):
    logits = apply_fn(params, token_ids[None])
    return model_lib.token_losses(
      logits, token_ids[None], loss_mask[None]
    ).sum()

  return loss_fn


def per_example_grads(
  apply_fn: capture.ApplyFn, params: Any, token_ids, loss_mask
) -> Any:
  """Whole per-example gradients, a pytree with a leading [batch] axis.

  The brute-force reference for everything factored; use it on small models.

  Args:
    apply_fn: (params, token_ids [batch, seq]) -> logits.
    params: The parameters.
    token_ids: [batch, seq] int32.
    loss_mask: [batch, seq] weights (`token_losses`).
  """
  grad_fn = jax.grad(_single_example_loss(apply_fn))
  return jax.vmap(grad_fn, in_axes=(None, 0, 0))(params, token_ids, loss_mask)


def make_factor_fn(
  apply_fn: capture.ApplyFn,
  params: Any,
  views: dict[Path, tuple[int, int]] | None = None,
) -> Callable[[Any, jax.Array, jax.Array], Factors]:
  """Returns `(params, token_ids, loss_mask) -> Factors` for a batch.

  Every weight a capture covers (`trak_jax.capture`) is held constant and
  described by its per-token terms; the backward pass computes only
  activation gradients (δ) and the other parameters' whole gradients.

  Args:
    apply_fn: (params, token_ids [batch, seq]) -> logits, any Flax model.
    params: The parameters (arrays or shapes), for the parameter structure.
    views: `capture.matrix_views(apply_fn, params)`, if already found.
  """
  if views is None:
    views = capture.matrix_views(apply_fn, params)

  def one_example(params, token_ids, loss_mask):
    flat = flat_params(params)
    vectors = {p: v for p, v in flat.items() if p not in views}
    matrices = {p: v for p, v in flat.items() if p in views}
    ids = token_ids[None]
    zeros, found = capture.zero_perturbations(apply_fn, params, ids)

    def loss_fn(vector_params, perturbations):
      merged = flax.traverse_util.unflatten_dict({**matrices, **vector_params})
      records = capture.apply_with_perturbations(
        apply_fn, merged, ids, perturbations
      )
      losses = model_lib.token_losses(records.logits, ids, loss_mask[None])
      return losses.sum(), records.inputs

    (loss, inputs), (vector_grads, output_grads) = _value_and_grads(
      loss_fn, vectors, zeros
    )
    terms = {
      path: [
        Term(*capture.site_terms(found[n], inputs[n], output_grads[n]))
        for n in names
      ]
      for path, names in capture.names_by_param(found)
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
