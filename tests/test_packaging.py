"""The slim install: what `import learned_rules` and `python -m experiments.remember` need is in the
core dependencies, and nothing the study commands or the tests alone need is."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

# Packages only the study figures (matplotlib, and Pillow with it), the tests, or no longer anything use.
NOT_CORE = ("matplotlib", "pillow", "evosax", "chex", "tensorboard", "tensorboardx", "tensorflow")
BLOCKED = ("matplotlib", "PIL", "evosax", "chex", "tensorboard", "tensorflow")
BLOCK = f"import sys\nfor name in {BLOCKED!r}:\n  sys.modules[name] = None\n"  # import fails


def _project(repo_root) -> dict:
  with open(os.path.join(repo_root, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def _name(requirement: str) -> str:
  return requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()


def test_core_dependencies_leave_out_the_experiment_and_test_stack(repo_root):
  project = _project(repo_root)
  core = {_name(r) for r in project["dependencies"]}
  assert not core & set(NOT_CORE), core & set(NOT_CORE)
  extras = project["optional-dependencies"]
  assert "matplotlib" in {_name(r) for r in extras["experiments"]}
  assert {"chex", "tensorboard", "pytest"} <= {_name(r) for r in extras["test"]}
  assert "learned_rules[experiments,gcs]" in extras["test"]  # the test command installs the experiments
  assert {"gcs", "cuda12", "cuda13", "tpu"} <= set(extras)


def _python(code: str, repo_root, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-c", BLOCK + code], cwd=repo_root, capture_output=True, text=True, **kwargs
  )


def test_the_library_and_remember_import_without_them(repo_root):
  """With matplotlib, Pillow, chex and TensorBoard made unimportable, the package, its NNX and Linen
  memories and the main command still import."""
  done = _python(
    "import learned_rules\nfrom learned_rules import nnx_memory, experiment, event_file, curve_png\n"
    "import experiments.remember\nprint(learned_rules.PlasticMemory, learned_rules.NNXPlasticMemory)",
    repo_root,
    timeout=120,
  )
  assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow  # one short run of the command: about 30 s
def test_remember_runs_without_them(repo_root, tmp_path):
  """`pip install -e . && python -m experiments.remember` needs nothing more: a short run with them
  unimportable writes its summary, curve and event files."""
  args = [
    "experiments.remember", "--config=learned_rules/configs/remember.py:tiny", f"--workdir={tmp_path}",
    "--config.train.num_steps=2", "--config.baseline_synapses_off=False",
  ]  # fmt: skip
  run = f"import runpy\nsys.argv = {args!r}\nrunpy.run_module(sys.argv[0], run_name='__main__')"
  done = _python(run, repo_root, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  names = os.listdir(tmp_path)
  assert {"summary.json", "training_curve.png"} <= set(names)
  assert any(n.startswith("events.out.tfevents.") for n in names)


# Prints the top-level third-party modules that loading the file at {path} on its own imports.
_LOAD_ALONE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("alone", "{path}")
module = sys.modules["alone"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
names = {{name.split(".")[0] for name in sys.modules if not name.startswith("_")}}
print(*sorted(names - set(sys.stdlib_module_names) - {{"alone"}}))
"""


@pytest.mark.parametrize("module, allowed", [("event_file", ["etils"]), ("curve_png", ["etils", "numpy"])])
def test_the_live_view_writers_need_neither_matplotlib_nor_tensorflow(repo_root, module, allowed):
  """Loaded on their own (not through the package's __init__), the event-file and curve writers pull in
  no third-party package but these: no TensorFlow, protobuf, TensorBoard or matplotlib."""
  path = f"learned_rules/{module}.py"
  command = [sys.executable, "-c", _LOAD_ALONE.format(path=path)]
  loaded = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, check=True).stdout.split()
  assert loaded == allowed
