"""The README's example of a learned rule inside a model runs exactly as written."""

from __future__ import annotations

import os
import re

import jax.numpy as jnp


def _example(repo_root: str, heading: str = "## Use a learned rule in your model") -> str:
  with open(os.path.join(repo_root, "README.md")) as f:
    text = f.read()
  section = text.split(heading, 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_example_runs_and_recalls(repo_root, capsys):
  code = _example(repo_root)
  assert "PlasticMemory.from_rule" in code and "nnx" not in code  # the Linen example, first in its section
  assert len(code.strip().splitlines()) <= 25  # a short example
  namespace = {"__name__": "readme_example"}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  assert "recalled bits:" in capsys.readouterr().out
  assert float(namespace["accuracy"]) > 0.95  # 8 snippets: the shipped rule's K@0.99


def test_readme_nnx_example_runs_recalls_and_differentiates(repo_root, capsys):
  """The NNX subsection of the same section: write, read and nnx.jit recall as the Linen example does,
  and its nnx.grad line gives the host layer finite, non-zero gradients (tests/test_nnx_memory.py)."""
  code = _example(repo_root, "### In a Flax NNX model")
  assert "nnx.grad" in code and len(code.strip().splitlines()) <= 25  # a short example
  namespace = {"__name__": "readme_nnx_example"}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  assert "recalled bits:" in capsys.readouterr().out
  assert float(namespace["accuracy"]) > 0.95  # 8 snippets: the shipped rule's K@0.99
  kernel = namespace["grads"]["kernel"].get_value()
  assert bool(jnp.all(jnp.isfinite(kernel))) and float(jnp.abs(kernel).sum()) > 0


def test_readme_general_rule_runs_on_another_size(repo_root):
  """The README's `general` snippet gives a memory of the size it names, with the shipped rule's theta
  (its recall at a size it never saw: tests/test_pretrained.py)."""
  namespace = {"__name__": "readme_general"}
  exec(compile(_example(repo_root, "## One rule for every size"), "README.md", "exec"), namespace)  # noqa: S102
  memory, rule = namespace["memory"], namespace["rule"]
  assert memory.num_neurons == 128 and memory.topology.n_in == memory.topology.n_out == 32
  assert memory.theta is rule.theta and memory.spec.center_synapses and memory.spec.rate_power == 0.75
