"""The README's example of a learned rule inside a model runs exactly as written."""

from __future__ import annotations

import os
import re


def _example(repo_root: str) -> str:
  with open(os.path.join(repo_root, "README.md")) as f:
    text = f.read()
  section = text.split("## Use a learned rule in your model", 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_example_runs_and_recalls(repo_root, capsys):
  code = _example(repo_root)
  assert len(code.strip().splitlines()) <= 25  # a short example
  namespace = {"__name__": "readme_example"}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  assert "recalled bits:" in capsys.readouterr().out
  assert float(namespace["accuracy"]) > 0.95  # 8 snippets: the shipped rule's K@0.99
