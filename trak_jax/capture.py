"""Per-token gradient factors of any Flax linen model, captured from outside.

A weight matrix used as `y_t = x_t W` at every token t has the per-example
gradient ∇W = Σ_t x_t δ_tᵀ, δ_t = ∂L/∂y_t (DESIGN.md section 1). This module
finds every such use in a model without the model knowing: it runs the model
under `flax.linen.intercept_methods` and, at each call of

- `nn.Dense`: x [..., m] -> y [..., n], kernel [m, n];
- `nn.DenseGeneral` over trailing axes with no batch dims: kernel
  [*in, *out] seen as the matrix [prod(in), prod(out)];
- `nn.Embed.__call__`: ids [...] -> rows [..., n], a gather into
  embedding [vocab, n];
- `nn.Embed.attend` (a tied output layer): h [..., n] -> logits [..., vocab],
  ∇E += Σ_t δ_t h_tᵀ;

records the call's input and adds a zero perturbation to its output; the
gradient with respect to that perturbation is δ. Subclasses of these modules
are captured too. Parameters no call covers (biases, norms, any weight used
another way) are differentiated whole, per example.

A capture is one call site: the same module called twice gives two sites of
one parameter, whose terms add up.
"""

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Path = tuple[str, ...]
# (params, token_ids [batch, seq]) -> logits [batch, seq, vocab]
ApplyFn = Callable[[Any, jax.Array], jax.Array]

DENSE, LOOKUP, ATTEND = "dense", "lookup", "attend"
# The input sites are found with by default: one short sequence (which
# calls a model makes does not depend on the length).
EXAMPLE_IDS = jax.ShapeDtypeStruct((1, 8), jnp.int32)


class Site(NamedTuple):
  """One captured call of a weight matrix."""

  param: Path  # the weight's parameter path
  kind: str  # DENSE, LOOKUP or ATTEND
  view: tuple[int, int]  # the weight as a matrix (m, n)


def _trailing_axes(axis, ndim: int) -> tuple[int, ...] | None:
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  axes = tuple(a % ndim for a in axes)
  if axes != tuple(range(ndim - len(axes), ndim)):
    return None
  return axes


def _site(module: nn.Module, method: str, args) -> Site | None:
  """The site of a call, or None if it is not a captured matrix use."""
  path = tuple(module.path)
  if isinstance(module, nn.Embed):
    view = (module.num_embeddings, module.features)
    if method == "__call__":
      return Site(path + ("embedding",), LOOKUP, view)
    if method == "attend":
      return Site(path + ("embedding",), ATTEND, view)
    return None
  if method != "__call__":
    return None
  inputs = args[0]
  if isinstance(module, nn.Dense):
    return Site(path + ("kernel",), DENSE, (inputs.shape[-1], module.features))
  if isinstance(module, nn.DenseGeneral):
    axes = _trailing_axes(module.axis, inputs.ndim)
    if axes is None or module.batch_dims:
      return None
    features = module.features
    features = (features,) if isinstance(features, int) else tuple(features)
    in_size = math.prod(inputs.shape[a] for a in axes)
    return Site(path + ("kernel",), DENSE, (in_size, math.prod(features)))
  return None


class _Recorder:
  """Interceptor state: the sites seen, and the records of one apply."""

  def __init__(self, perturbations: dict[str, jax.Array] | None):
    self.perturbations = perturbations
    self.sites: dict[str, Site] = {}
    self.inputs: dict[str, jax.Array] = {}
    self.outputs: dict[str, jax.ShapeDtypeStruct] = {}

  def __call__(self, next_fun, args, kwargs, context):
    site = _site(context.module, context.method_name, args)
    outputs = next_fun(*args, **kwargs)
    if site is None:
      return outputs
    # Call sites are numbered per parameter, in call order: a fixed order
    # for a fixed model, so every trace builds the same program.
    name = f"{'/'.join(site.param)}#{site.kind}#" + str(
      sum(s.param == site.param for s in self.sites.values())
    )
    self.sites[name] = site
    self.outputs[name] = jax.ShapeDtypeStruct(outputs.shape, outputs.dtype)
    if self.perturbations is None:
      return outputs
    self.inputs[name] = args[0]
    return outputs + self.perturbations[name].astype(outputs.dtype)


def _trace(apply_fn: ApplyFn, params: Any, token_ids: Any) -> _Recorder:
  """Runs the model abstractly (computing nothing), recording its sites."""
  recorder = _Recorder(None)

  def run(params, token_ids):
    with nn.intercept_methods(recorder):
      return apply_fn(params, token_ids)

  jax.eval_shape(run, params, token_ids)
  return recorder


def sites(apply_fn: ApplyFn, params: Any, token_ids: Any) -> dict[str, Site]:
  """The captured call sites of a model by name, in call order.

  Args:
    apply_fn: (params, token_ids) -> logits.
    params: Parameters, arrays or `jax.ShapeDtypeStruct`s.
    token_ids: Example input, an array or `jax.ShapeDtypeStruct`.
  """
  return dict(_trace(apply_fn, params, token_ids).sites)


def matrix_views(
  apply_fn: ApplyFn, params: Any, token_ids: Any = EXAMPLE_IDS
) -> dict[Path, tuple[int, int]]:
  """The captured parameters and their matrix views (m, n), in path order."""
  found = {s.param: s.view for s in sites(apply_fn, params, token_ids).values()}
  return dict(sorted(found.items()))


class Records(NamedTuple):
  """What one apply under capture gives."""

  logits: jax.Array
  inputs: dict[str, jax.Array]  # site name -> its call's input
  sites: dict[str, Site]


def apply_with_perturbations(
  apply_fn: ApplyFn,
  params: Any,
  token_ids: jax.Array,
  perturbations: dict[str, jax.Array],
) -> Records:
  """Applies the model, adding `perturbations[site]` to each site's output."""
  recorder = _Recorder(perturbations)
  with nn.intercept_methods(recorder):
    logits = apply_fn(params, token_ids)
  return Records(logits, dict(recorder.inputs), dict(recorder.sites))


def zero_perturbations(
  apply_fn: ApplyFn, params: Any, token_ids: jax.Array
) -> tuple[dict[str, jax.Array], dict[str, Site]]:
  """Zeros shaped like every site's output for this input, and the sites."""
  recorder = _trace(apply_fn, params, token_ids)
  zeros = {
    name: jnp.zeros(shape.shape, shape.dtype)
    for name, shape in recorder.outputs.items()
  }
  return zeros, dict(recorder.sites)


def site_terms(
  site: Site, inputs: jax.Array, output_grad: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(left, right) of Σ_t left_t right_tᵀ, tokens flattened to one axis.

  left is [tokens, m] or, for a lookup, [tokens] row ids; right [tokens, n].
  """
  m, n = site.view
  if site.kind == LOOKUP:
    return inputs.reshape(-1).astype(jnp.int32), output_grad.reshape(-1, n)
  if site.kind == ATTEND:
    # logits_t = E h_t: ∇E = Σ_t δ_t h_tᵀ, δ over the vocabulary.
    return output_grad.reshape(-1, m), inputs.reshape(-1, n)
  return inputs.reshape(-1, m), output_grad.reshape(-1, n)


def names_by_param(found: dict[str, Site]) -> Iterator[tuple[Path, list[str]]]:
  """(param path, its site names in call order), params in path order."""
  grouped: dict[Path, list[str]] = {}
  for name, site in found.items():
    grouped.setdefault(site.param, []).append(name)
  yield from sorted(grouped.items())
