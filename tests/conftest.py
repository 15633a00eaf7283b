"""Shared fixtures, and the settings that keep the suite within a few minutes on 2 CPU cores.

Before JAX starts, the host platform is split into 8 CPU devices (`tests/test_sharding.py` builds
meshes on them; every other test runs on the first). Compilation dominates the suite's time, so also:

- XLA's CPU backend optimisation is turned down (`--xla_backend_optimization_level=0`): the tiny
  networks here run in microseconds either way, and their programs compile several times faster.
- XLA's CPU fusion emitters are turned off (`--xla_cpu_use_fusion_emitters=false`, where the installed
  XLA has the switch): the older emitters compile the same programs about three times faster.
- A persistent compilation cache in a temporary directory is shared by this process and by the
  subprocesses of `test_cli.py`, so a program compiled once (e.g. the `:tiny` meta step) is not
  compiled again by a later `train_and_evaluate` call or by the command line run.

The suite runs in two worker processes (pytest-xdist, each test file on one; pyproject.toml's
`addopts`): the workers inherit these settings and share the one compilation cache.

Each setting can be overridden from the environment (`XLA_FLAGS`, `JAX_COMPILATION_CACHE_DIR`);
none changes what is computed, only how long the compiler takes.

The few tests whose programs run for seconds rather than microseconds (a shipped rule's held-out
evaluation: 512 episodes of a 64-neuron network) take the `optimized_evaluation` fixture, which compiles
that evaluation with XLA's optimisation back on: at level 0 it runs about seven times slower, which
costs far more than the compile time saved.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile

# Eight CPU devices, for the sharding tests (tests/test_sharding.py); everything else runs on one.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# XLA's CPU fusion emitters compile the rule's programs several times slower than the older emitters
# (measured: the `:tiny` meta step 4.8 s against 1.5 s). Off where this XLA still has the switch: an
# unknown flag would abort every JAX process, so a child process tries it first.
_LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
  _trial = subprocess.run(
    [sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"],
    env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": _LEGACY_EMITTERS},
    capture_output=True,
    check=False,
  )
  if _trial.returncode == 0:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _LEGACY_EMITTERS).strip()
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="learned_rules_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from learned_rules import evaluation, metrics, network, probe, rules, storage_probe  # noqa: E402
from learned_rules.configs import remember  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
  parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow")


def pytest_configure(config):
  config.addinivalue_line(
    "markers", "slow: longer than the suite's budget allows (minutes); run with --run-slow or RUN_SLOW=1"
  )


def pytest_collection_modifyitems(config, items):
  if config.getoption("--run-slow") or os.environ.get("RUN_SLOW") == "1":
    return
  skip = pytest.mark.skip(reason="slow: run with --run-slow (or RUN_SLOW=1)")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# Sizes chosen pairwise different (Db != Ds != Da != E != H, n_in != n_out != n_hidden), so that a
# transposed or mixed-up axis shows up as a shape error or a wrong number instead of hiding.
SMALL_SPEC = rules.RuleSpec(
  body_dim=6, synapse_dim=3, act_dim=2, emb_dim=5, hidden=7, num_types=3, bilinear=True
)
N_IN, N_OUT, N_HIDDEN = 3, 2, 4


# XLA's CPU optimisation at level 1 rather than the suite's 0: the same program and the same numbers,
# several times faster on a 64-neuron network.
_OPTIMIZED_OPTIONS = {"xla_backend_optimization_level": 1}


def _optimized(jitted, *static: str):
  """`jitted`'s function compiled with `_OPTIMIZED_OPTIONS`."""
  return jax.jit(jitted.__wrapped__, static_argnames=static, compiler_options=_OPTIMIZED_OPTIONS)


# The programs that run for seconds in the tests that evaluate a shipped rule: every held-out
# evaluation (of episodes, and of fresh streams), the rule probe's recorded unroll and the storage
# probe. Made once, so that each problem compiles once for the whole suite.
_OPTIMIZED = (
  (evaluation, "_eval_padded", _optimized(evaluation._eval_padded, "problem")),
  (evaluation, "eval_batch", _optimized(evaluation.eval_batch, "problem", "batch")),
  (probe, "_record", _optimized(probe._record, "problem", "batch")),
  (storage_probe, "branch_writes", _optimized(storage_probe.branch_writes, "problem", "batch")),
)


@pytest.fixture
def optimized_evaluation(monkeypatch):
  """This test's held-out evaluations and probes compile with XLA's optimisation on (module docstring)."""
  for module, name, optimized in _OPTIMIZED:
    monkeypatch.setattr(module, name, optimized)


@pytest.fixture(scope="session")
def optimized_jit():
  """`jax.jit` with XLA's optimisation on, as `optimized_evaluation`'s programs, for a test's own
  program that runs a 64-neuron network over many episodes."""
  return functools.partial(jax.jit, compiler_options=_OPTIMIZED_OPTIONS)


@pytest.fixture(scope="session")
def repo_root() -> str:
  return REPO_ROOT


@pytest.fixture(scope="session")
def run_module(repo_root):
  """`run_module(module, *args, timeout=300)`: `python -m module *args` run from the repository root on
  CPU, its output captured; returns the `subprocess.CompletedProcess` whatever its exit code."""

  def run(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
      [sys.executable, "-m", module, *args],
      cwd=repo_root,
      env={**os.environ, "JAX_PLATFORMS": "cpu"},
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
    )

  return run


@pytest.fixture
def make_cfg():
  """`make_cfg("tiny,auto")` is a fresh `learned_rules/configs/remember.py` config of that variant."""
  return remember.get_config


def perturbed_theta(key: jax.Array, spec: rules.RuleSpec, scale: float = 0.3, seed: int = 0) -> rules.Theta:
  """`init_theta` plus noise on every leaf, so no bias, initial state or embedding is zero (zeros
  would hide a term added twice or to the wrong axis). Test data comes from numpy's generator:
  it costs no compilation."""
  rng = np.random.default_rng(seed)
  theta = rules.init_theta(key, spec)
  return jax.tree.map(
    lambda leaf: leaf + jnp.asarray(scale * rng.standard_normal(leaf.shape), jnp.float32), theta
  )


def random_net_state(seed: int, topo: network.Topology, spec: rules.RuleSpec) -> network.NetState:
  """Bodies `[N, Db]` and synapse blocks of order one, independent of the types: a random `[N, N, Ds]`
  matrix cut into `topo`'s blocks (`network.block_synapses`, which zeroes masked-out entries)."""
  rng = np.random.default_rng(seed)
  n = topo.num_neurons
  bodies = rng.standard_normal((n, spec.body_dim))
  dense = rng.standard_normal((n, n, spec.synapse_dim))
  return network.NetState(
    bodies=jnp.asarray(bodies, jnp.float32),
    synapses=network.block_synapses(topo, jnp.asarray(dense, jnp.float32)),
  )


@pytest.fixture(scope="session")
def small_spec() -> rules.RuleSpec:
  return SMALL_SPEC


@pytest.fixture(scope="session")
def full_topo() -> network.Topology:
  return network.make_full(N_IN, N_OUT, N_HIDDEN)


@pytest.fixture(scope="session")
def theta() -> rules.Theta:
  return perturbed_theta(jax.random.PRNGKey(0), SMALL_SPEC)


@pytest.fixture(scope="session")
def net_state(full_topo) -> network.NetState:
  return random_net_state(1, full_topo, SMALL_SPEC)


@pytest.fixture(scope="session")
def step_input(full_topo) -> jax.Array:
  """`[N]` external input: +-1 on every neuron (hidden ones too, to exercise the input drive)."""
  rng = np.random.default_rng(2)
  return jnp.asarray(rng.choice([-1.0, 1.0], full_topo.num_neurons), jnp.float32)


def assert_trees_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-6) -> None:
  """Leaf-wise `np.testing.assert_allclose` with the leaf's path in the message."""
  flat_a = jax.tree_util.tree_flatten_with_path(actual)[0]
  flat_e = jax.tree.leaves(expected)
  assert len(flat_a) == len(flat_e)
  for (path, a), e in zip(flat_a, flat_e, strict=True):
    np.testing.assert_allclose(
      np.asarray(a), np.asarray(e), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
    )


@pytest.fixture(scope="session")
def trees_close():
  return assert_trees_close


@contextlib.contextmanager
def logged_info():
  """The absl INFO lines the library logs (through `metrics.logging`) inside the block, formatted, in
  the list it yields."""
  lines: list[str] = []
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(
      metrics.logging, "info", lambda msg, *args: lines.append(str(msg) % args if args else str(msg))
    )
    yield lines


@pytest.fixture(scope="session")
def info_lines():
  """`with info_lines() as lines:` collects the library's absl INFO lines (`logged_info`)."""
  return logged_info


@pytest.fixture(scope="session")
def make_theta():
  return perturbed_theta


@pytest.fixture(scope="session")
def make_net_state():
  return random_net_state
