"""The library's layering: the config stops at the door (`learned_rules/config.py` is the only library
module that imports `ml_collections`), and the commands do not reach into one another."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _imports(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
  return names


def test_only_config_imports_ml_collections():
  importers = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "learned_rules").rglob("*.py")
    if any(name.split(".")[0] == "ml_collections" for name in _imports(p))
  )
  assert importers == ["learned_rules/config.py"]


def test_the_library_imports_no_command_and_no_absl_flags():
  for path in (ROOT / "learned_rules").rglob("*.py"):
    names = _imports(path)
    assert not any(n.split(".")[0] == "experiments" for n in names), path
    assert "absl.flags" not in names and not any("config_flags" in n for n in names), path
