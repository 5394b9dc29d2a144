"""The BUILD files keep up with the code: a target per module and per test.

Every module under trak_jax/, pipelines/, tpu_launch/ and bench/ (and every
helper under tests/) is in the `srcs` of a py_library or py_binary of its
directory's BUILD file, every tests/**/test_*.py has a py_test, every
project label in `deps` and `data` names a declared target, the module-level
imports of project modules are in `deps`, and the deps have no cycle. The
BUILD files are read with Python's `ast` (these ones are plain Starlark calls
that Python parses too). The last test asks Bazel itself (`bazel query`),
and skips where Debian's bazel-bootstrap is not installed
(`bash scripts/check_bazel.sh` installs it).
"""

import ast
import pathlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import NamedTuple

import pytest

# The real path, so that this also finds the tree when run from a runfiles
# directory of symlinks.
REPO = pathlib.Path(__file__).resolve().parents[1]
CODE_ROOTS = ("trak_jax", "pipelines", "tpu_launch", "bench", "tests")
PY_RULES = ("py_library", "py_binary", "py_test")
SKIP_DIRS = {"__pycache__"}


class Rule(NamedTuple):
  kind: str  # e.g. "py_library"
  package: str  # "trak_jax/eval"; "" for the repo root
  name: str  # "metrics"
  srcs: tuple[str, ...]  # file paths relative to REPO
  deps: tuple[str, ...]  # labels as written
  data: tuple[str, ...]  # labels or file names as written

  @property
  def label(self) -> str:
    return f"//{self.package}:{self.name}"


def _glob(package_dir: pathlib.Path, include, exclude=()) -> list[str]:
  """Bazel's glob() over files, relative to the package directory."""
  excluded = {p for pattern in exclude for p in package_dir.glob(pattern)}
  return sorted(
    str(p.relative_to(package_dir))
    for pattern in include
    for p in package_dir.glob(pattern)
    if p.is_file() and p not in excluded
  )


def _evaluate(node: ast.expr, package_dir: pathlib.Path):
  """Value of a BUILD attribute: literals, `+` and glob()."""
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
    left = _evaluate(node.left, package_dir)
    return left + _evaluate(node.right, package_dir)
  if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "glob":
    args = [_evaluate(a, package_dir) for a in node.args]
    kwargs = {k.arg: _evaluate(k.value, package_dir) for k in node.keywords}
    return _glob(package_dir, *args, **kwargs)
  return ast.literal_eval(node)


def _rule(call: ast.Call, package: str) -> Rule:
  package_dir = REPO / package
  attrs = {k.arg: _evaluate(k.value, package_dir) for k in call.keywords}
  return Rule(
    kind=call.func.id,
    package=package,
    name=attrs["name"],
    srcs=tuple(
      str(pathlib.PurePosixPath(package) / src) for src in attrs.get("srcs", ())
    ),
    deps=tuple(attrs.get("deps", ())),
    data=tuple(attrs.get("data", ())),
  )


def parse_build_text(text: str, package: str) -> list[Rule]:
  """The rules a BUILD file declares (calls with a `name`)."""
  tree = ast.parse(text, filename=f"{package}/BUILD")
  return [
    _rule(node.value, package)
    for node in tree.body
    if isinstance(node, ast.Expr)
    and isinstance(node.value, ast.Call)
    and isinstance(node.value.func, ast.Name)
    and any(k.arg == "name" for k in node.value.keywords)
  ]


def parse_build_file(path: pathlib.Path) -> list[Rule]:
  package = path.parent.relative_to(REPO).as_posix()
  return parse_build_text(path.read_text(), "" if package == "." else package)


def _walk(directory: pathlib.Path) -> Iterator[pathlib.Path]:
  for path in sorted(directory.iterdir()):
    if path.is_dir():
      if path.name not in SKIP_DIRS and not path.name.startswith("."):
        yield from _walk(path)
    else:
      yield path


def is_test_file(path: str) -> bool:
  return path.startswith("tests/") and path.rsplit("/", 1)[-1].startswith(
    "test_"
  )


def python_files() -> list[str]:
  """Paths (relative to REPO) of the project's Python files."""
  return [
    str(path.relative_to(REPO))
    for root in CODE_ROOTS
    if (REPO / root).is_dir()
    for path in _walk(REPO / root)
    if path.suffix == ".py"
  ]


def build_files() -> list[pathlib.Path]:
  roots = [REPO / root for root in CODE_ROOTS if (REPO / root).is_dir()]
  found = [path for root in roots for path in _walk(root)]
  return [REPO / "BUILD"] + [p for p in found if p.name == "BUILD"]


@pytest.fixture(scope="module")
def rules() -> dict[str, Rule]:
  """Every declared rule, by canonical label (`//package:name`)."""
  declared = {}
  for path in build_files():
    for rule in parse_build_file(path):
      assert rule.label not in declared, f"{rule.label} declared twice"
      declared[rule.label] = rule
  return declared


def canonical(label: str, package: str) -> str:
  """`:x`, `x`, `//a/b` and `//a/b:x` as `//package:name`."""
  if label.startswith("//"):
    package, _, name = label[2:].partition(":")
    return f"//{package}:{name or package.rsplit('/', 1)[-1]}"
  return f"//{package}:{label.lstrip(':')}"


def owners(rules: dict[str, Rule], kinds=PY_RULES) -> dict[str, Rule]:
  """The rule of the given kinds whose `srcs` hold each file."""
  return {
    src: rule
    for rule in rules.values()
    if rule.kind in kinds
    for src in rule.srcs
  }


def test_every_python_directory_has_a_build_file():
  directories = {str(pathlib.PurePosixPath(f).parent) for f in python_files()}
  missing = sorted(d for d in directories if not (REPO / d / "BUILD").exists())
  assert not missing, f"directories with Python code but no BUILD: {missing}"


def test_every_module_has_a_library_or_binary(rules):
  owned = owners(rules, kinds=("py_library", "py_binary"))
  modules = [f for f in python_files() if not is_test_file(f)]
  missing = [f for f in modules if f not in owned]
  assert not missing, f"no py_library/py_binary has these in srcs: {missing}"


def test_every_test_file_has_a_py_test(rules):
  owned = owners(rules, kinds=("py_test",))
  tests = [f for f in python_files() if is_test_file(f)]
  assert tests, "found no test files: is REPO right?"
  missing = [f for f in tests if f not in owned]
  assert not missing, f"no py_test has these in srcs: {missing}"


def test_python_srcs_exist_in_their_own_package(rules):
  for rule in rules.values():
    for src in rule.srcs if rule.kind in PY_RULES else ():
      assert (REPO / src).is_file(), f"{rule.label}: {src} does not exist"
      directory = pathlib.PurePosixPath(src).parent.as_posix()
      assert directory == (rule.package or "."), (
        f"{rule.label}: {src} is not in package {rule.package!r}"
      )


def test_project_labels_name_declared_targets(rules):
  bad = []
  for rule in rules.values():
    for label in rule.deps:
      if not label.startswith("@") and canonical(label, rule.package) not in (
        rules
      ):
        bad.append(f"{rule.label} deps {label}")
    for item in rule.data:
      is_label = item.startswith((":", "//"))
      if is_label and canonical(item, rule.package) not in rules:
        bad.append(f"{rule.label} data {item}")
      if not is_label and not (REPO / rule.package / item).exists():
        bad.append(f"{rule.label} data {item} (no such file)")
  assert not bad, "labels that name nothing:\n" + "\n".join(bad)


def module_file(dotted: str, files: set[str]) -> str | None:
  """The project file that defines a dotted module name, if any."""
  path = dotted.replace(".", "/")
  for candidate in (f"{path}.py", f"{path}/__init__.py"):
    if candidate in files:
      return candidate
  return None


def _from_import_files(node: ast.ImportFrom, path: str, files: set[str]):
  base = node.module or ""
  if node.level:
    parts = pathlib.PurePosixPath(path).parent.parts
    parts = parts[: len(parts) - node.level + 1]
    base = ".".join([*parts, base] if base else parts)
  for alias in node.names:
    # `from pkg import name` names a submodule, or else pkg itself.
    found = module_file(f"{base}.{alias.name}", files) or module_file(
      base, files
    )
    if found:
      yield found


def module_level_imports(path: str, files: set[str]) -> set[str]:
  """Project files that `path` imports at module level.

  Function-level imports are left out: a BUILD file may omit one that would
  close a dependency cycle (and says so in a comment).
  """
  tree = ast.parse((REPO / path).read_text(), filename=path)
  found = set()
  for node in tree.body:
    if isinstance(node, ast.Import):
      for alias in node.names:
        parts = alias.name.split(".")
        # `import a.b.c` loads a.b.c, or its longest project prefix.
        for end in range(len(parts), 0, -1):
          hit = module_file(".".join(parts[:end]), files)
          if hit:
            found.add(hit)
            break
    elif isinstance(node, ast.ImportFrom):
      found.update(_from_import_files(node, path, files))
  return found - {path}


def test_module_level_imports_are_deps(rules):
  files = set(python_files())
  owned = owners(rules)
  missing = []
  for path in sorted(files & owned.keys()):
    rule = owned[path]
    deps = {canonical(label, rule.package) for label in rule.deps}
    for imported in sorted(module_level_imports(path, files)):
      target = owned.get(imported)
      if target and target.label != rule.label and target.label not in deps:
        missing.append(f"{rule.label} imports {imported}: add {target.label}")
  assert not missing, "imports missing from deps:\n" + "\n".join(missing)


def test_deps_have_no_cycle(rules):
  graph = {
    label: [canonical(dep, rule.package) for dep in rule.deps]
    for label, rule in rules.items()
  }
  done, path = set(), []

  def visit(label):
    if label in path:
      cycle = path[path.index(label) :] + [label]
      pytest.fail("dependency cycle: " + " -> ".join(cycle))
    if label in done or label not in graph:
      return
    path.append(label)
    for dep in graph[label]:
      visit(dep)
    path.pop()
    done.add(label)

  for label in sorted(graph):
    visit(label)


def test_parser_reads_globs_and_labels():
  # Guards the checks above against passing vacuously.
  config, configs = parse_build_text(
    'py_library(name = "config", srcs = ["config.py"],'
    ' deps = [":configs"] + ["//trak_jax"])\n'
    'filegroup(name = "configs", srcs = glob(["configs/*.gin"]))\n',
    "tpu_launch",
  )
  assert config.label == "//tpu_launch:config"
  assert config.srcs == ("tpu_launch/config.py",)
  assert {canonical(d, config.package) for d in config.deps} == {
    "//tpu_launch:configs",
    "//trak_jax:trak_jax",
  }
  assert "tpu_launch/configs/v4_32.gin" in configs.srcs
  assert "trak_jax/encoder.py" in module_level_imports(
    "pipelines/encode_lib.py", set(python_files())
  )


@pytest.mark.skipif(
  shutil.which("bazel") is None,
  reason="bazel is not installed (bash scripts/check_bazel.sh installs "
  "Debian's bazel-bootstrap)",
)
def test_bazel_query_lists_every_declared_target(rules, tmp_path):
  bazel = [
    "bazel",
    f"--output_user_root={tmp_path / 'bazel'}",
    "--batch",
    "--nohome_rc",
    "query",
    "--noshow_progress",
  ]

  def query(expression: str) -> subprocess.CompletedProcess:
    return subprocess.run(
      [*bazel, expression],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )

  listed = query("//...")
  assert listed.returncode == 0, listed.stderr
  assert set(listed.stdout.split()) == set(rules)
  # Bazel's own check that every deps and data label resolves.
  resolved = query("labels(deps, //...) + labels(data, //...)")
  assert resolved.returncode == 0, resolved.stderr
