"""The import graph of the project's modules: dependencies point down.

Read from the source (every import statement, function-level ones too), so
a lazy import that closes a circle counts as much as a top-level one.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("trak_jax", "pipelines")
# Format modules: other tools read what they write, with no JAX installed.
NO_JAX = ("trak_jax.fingerprint", "trak_jax.store", "trak_jax.tf_import")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
  """The project modules (and third-party roots) that `path` imports."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [node.module]
      names += [f"{node.module}.{alias.name}" for alias in node.names]
    else:
      continue
    for name in names:
      found.add(name if name in modules else name.split(".")[0])
  return found


def _paths() -> list[pathlib.Path]:
  return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def _graph() -> dict[str, set[str]]:
  modules = {_module_name(p) for p in _paths()}
  return {_module_name(p): _imports(p, modules) for p in _paths()}


def _packages() -> set[str]:
  return {_module_name(p) for p in _paths() if p.name == "__init__.py"}


def _is_project(name: str) -> bool:
  return name.split(".")[0] in PACKAGES


def _cycle(
  graph: dict[str, set[str]], packages: set[str] = frozenset()
) -> list[str] | None:
  """One import circle among the project's modules, or None.

  Packages (`__init__`) are left out: they re-export what is below them.
  """
  edges = {
    m: {d for d in deps if d in graph and d not in packages}
    for m, deps in graph.items()
    if m not in packages
  }
  state: dict[str, int] = {}

  def visit(module, trail):
    state[module] = 1
    for dep in sorted(edges[module]):
      if state.get(dep) == 1:
        return trail[trail.index(dep) :] + [dep]
      if dep not in state and (found := visit(dep, [*trail, dep])):
        return found
    state[module] = 2
    return None

  for module in sorted(edges):
    if module not in state and (found := visit(module, [module])):
      return found
  return None


def test_the_graph_sees_known_edges():
  graph = _graph()
  assert "trak_jax.train_state" in graph["trak_jax.checkpoint"]
  assert "trak_jax.store" in graph["pipelines.encode_lib"]
  assert "jax" in graph["trak_jax.encoder"]


def test_no_import_circle():
  assert _cycle(_graph(), _packages()) is None


def test_cycle_finder_finds_a_planted_circle():
  graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}
  assert _cycle(graph) == ["a.x", "a.y", "a.z", "a.x"]


def test_the_library_never_imports_the_jobs():
  upward = {
    module: sorted(d for d in deps if d.split(".")[0] == "pipelines")
    for module, deps in _graph().items()
    if module.startswith("trak_jax")
  }
  assert {m: d for m, d in upward.items() if d} == {}


@pytest.mark.parametrize("module", NO_JAX)
def test_format_modules_import_no_jax(module):
  """The module and the project modules it reaches import no JAX.

  Packages are not followed: `trak_jax/__init__.py` re-exports the public
  API, JAX included, and is not what a format module depends on.
  """
  graph, packages = _graph(), _packages()
  seen, todo = set(), [module]
  while todo:
    current = todo.pop()
    seen.add(current)
    todo += [
      d
      for d in graph.get(current, ())
      if d not in seen and d in graph and d not in packages
    ]
    assert not {"jax", "flax", "optax"} & graph.get(current, set()), current


def test_store_does_not_import_the_encoder():
  assert "trak_jax.encoder" not in _graph()["trak_jax.store"]
