"""The README's example of a learned rule inside a model runs exactly as written."""

from __future__ import annotations

import os
import re


def _example(repo_root: str, heading: str = "## Use a learned rule in your model") -> str:
  with open(os.path.join(repo_root, "README.md")) as f:
    text = f.read()
  section = text.split(heading, 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_example_runs_and_recalls(repo_root, capsys):
  code = _example(repo_root)
  assert len(code.strip().splitlines()) <= 25  # a short example
  namespace = {"__name__": "readme_example"}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  assert "recalled bits:" in capsys.readouterr().out
  assert float(namespace["accuracy"]) > 0.95  # 8 snippets: the shipped rule's K@0.99


def test_readme_general_rule_runs_on_another_size(repo_root):
  """The README's `general` snippet gives a memory of the size it names, with the shipped rule's theta
  (its recall at a size it never saw: tests/test_pretrained.py)."""
  namespace = {"__name__": "readme_general"}
  exec(compile(_example(repo_root, "## One rule for every size"), "README.md", "exec"), namespace)  # noqa: S102
  memory, rule = namespace["memory"], namespace["rule"]
  assert memory.num_neurons == 128 and memory.topology.n_in == memory.topology.n_out == 32
  assert memory.theta is rule.theta and memory.spec.center_synapses and memory.spec.rate_power == 0.75
