"""What an encoding means: the fingerprint every artifact records.

A store, a Hessian, an index and a query side each record the `Fingerprint`
of the encoder that made them (checkpoint digest, correction, projection and
its layout, seed, d, dtype); two artifacts are mixed only when their
fingerprints are equal, and otherwise the first differing field is named.
A format module: it imports no JAX, so readers of stores and indexes need
none.
"""

import dataclasses
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class Fingerprint:
  """What an encoding means; stores, Hessians and indexes compare it."""

  checkpoint_digest: str
  correction: str  # correction kind and ε, as JSON
  projection: str  # projection kind, dims and layout, as JSON
  seed: int
  dim: int
  dtype: str

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "Fingerprint":
    return cls(**values)

  def check_matches(self, other: "Fingerprint", *, what: str) -> None:
    """Raises FingerprintMismatchError naming the first differing field.

    For a field recorded as JSON (correction, projection) the error also
    names the differing keys, e.g. the correction's 'factored'.
    """
    for field in dataclasses.fields(self):
      mine, theirs = getattr(self, field.name), getattr(other, field.name)
      if mine != theirs:
        raise FingerprintMismatchError(
          f"{what}: fingerprint field '{field.name}' differs"
          f"{_differing_keys(mine, theirs)}: {mine!r} != {theirs!r}"
        )


def _differing_keys(mine: Any, theirs: Any) -> str:
  """Names the keys two JSON objects differ in (" in 'a', 'b'"), else ""."""
  try:
    mine, theirs = json.loads(mine), json.loads(theirs)
  except (TypeError, json.JSONDecodeError):
    return ""
  if not (isinstance(mine, dict) and isinstance(theirs, dict)):
    return ""
  keys = sorted(
    k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)
  )
  return " in " + ", ".join(f"'{k}'" for k in keys)


class FingerprintMismatchError(ValueError):
  """Two artifacts were made with different encoders."""
