r"""What the benchmark measures: its cases and sizes, the programs it compiles for each, and how a
compiled program is timed (learned_rules/benchmarking.py runs them; docs/PERFORMANCE.md reports a run).

Sizes (`PLANS`): `full` networks of N = 64, 256, 1024 neurons (N/4 inputs, N/4 outputs, N/2 hidden)
at (B, T) = (16, 32), (8, 16), (4, 8), and `layered-256` (64 inputs, hidden layers of 200 and 200,
64 outputs: 65,600 synapses against full-256's 65,280) at (8, 16). Then the four cases at the shapes
of the project's work, in every plan:

- `train-64` and `train-128`: the meta-gradient at the shape of a meta step, B = 16 episodes of
  K = 8 on 64 neurons (the default run, T = 34) and of K = 32 on 128 (T = 130); train-128's
  reference runs 4 of the 16 episodes (`Case.reference_batch`: its compiled peak at 16 is 16 GiB);
- `host-64`: one training step of a host model around a frozen `PlasticMemory` (`HostCase`,
  learned_rules/benchmark_host.py), 32 sequences of 8 token pairs;
- `eval-1024`: the forward recall of one episode of K = 192 on 1024 neurons (T = 770), forward only
  (`Case.forward_only`), timed once without a warm-up call.

The `quick` plan runs smaller batches and unrolls for the first four, full-1024 at B = 1, T = 2
without the reference, the sweeps at N = 64 for memory, and no million-synapse case; `tiny` runs in
seconds, at the sizes the tests use, one case of each kind.

For each case (a topology, a batch `B` of networks, an unroll of `T` steps) the benchmark measures,
in one process, after compilation and one warm-up call, as the best wall time of `repeats` calls (a
case's programs are compiled together, `compile_threads` at once, then timed one by one):

- forward throughput: `jax.jit` of the batched unroll, in synapse-steps per second
  (`B * num_synapses * T / seconds`);
- meta-gradient throughput: `jax.jit(jax.grad(loss))` in `theta`, where `loss` is the mean squared
  error of the readouts against random +-1 targets over the whole unroll; the inputs are random +-1
  on the input and output neurons and 0 on the hidden ones;
- peak memory of the meta-gradient: XLA's compiled estimate (temp + argument + output bytes of
  `memory_analysis()`), and the process's peak RSS after the case (monotone over the process).

Both are measured for the library (`unroll.unroll`, its default remat policy) and for the reference
(learned_rules/reference.py): dense `[N, N, Ds]` synapses with a dense mask, the whole first layer of
`f_s` applied to each synapse's concatenated inputs, vmapped over pre then post, and a plain
`lax.scan` without rematerialisation. It computes the same numbers: each case records the largest
readout difference of the two forwards and the largest difference of the two meta-gradients.

FLOP convention (`FLOPS_CONVENTION`): `F`, the forward FLOPs of `f_s` per synapse-step in the
straightforward form (first layer `2 (Ds + 2 (Da + E)) H`, bilinear term `2 H Da^2 + 2 H Da`, second
layer `2 H Ds`; body updates, messages and readouts not counted), and a meta-gradient costs `3 F` per
synapse-step (backward = 2x forward). `fraction_of_matmul_roofline` is the meta-gradient's
synapse-steps per second times `3 F` over the FLOP/s of a large float32 matmul measured in the same
process. The library's split first layer does fewer FLOPs than `F`, so this is an effective rate.

Two more sections: the library meta-gradient timed under every policy of `unroll.REMAT_POLICIES`
(`remat_policies`), and its compiled peak bytes against the unroll length (`memory_vs_T`, compiled
only, with LLVM's optimisation off, which leaves the buffer assignment and so the peak unchanged).
The full plan also runs the target size once, a full network of 1024 neurons (1,047,552 synapses),
`B = 4`, `T = 64` (`million_synapse_case`). Programs whose compiled peak exceeds the run limit are
compiled but not run, and their throughputs are `null` with a note.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from learned_rules import network, reference, rules, tasks, unroll

FLOPS_CONVENTION = (
  "F = forward FLOPs of f_s per synapse-step in the straightforward form: first layer "
  "2*(Ds + 2*(Da+E))*H, bilinear 2*H*Da*Da + 2*H*Da, second layer 2*H*Ds (body updates, messages "
  "and readouts not counted); a meta-gradient costs 3*F per synapse-step (backward = 2x forward)."
)


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark case: a topology and the batch `B` and unroll length `T` it is run at.

  `hidden` is `(n_hidden,)` for `full` and the hidden layer sizes for `layered`.
  """

  name: str
  topology: str
  n_in: int
  n_out: int
  hidden: tuple[int, ...]
  batch: int
  steps: int
  reference: bool = True  # False: the reference is not run (recorded as null with a note)
  reference_batch: int | None = None  # the reference runs the first this many networks (None: all)
  forward_only: bool = False  # True: only the forward unroll is timed (an evaluation)
  repeats: int | None = None  # timed calls per program; None: the plan's
  warmup: bool = True  # False: the first call after compilation is the one timed (for long calls)

  @property
  def num_neurons(self) -> int:
    return self.n_in + self.n_out + sum(self.hidden)

  @property
  def reference_networks(self) -> int:
    """The networks the reference runs: the first `reference_batch`, or the whole batch."""
    return self.reference_batch or self.batch

  def make_topology(self) -> network.Topology:
    if self.topology == "full":
      return network.make_full(self.n_in, self.n_out, self.hidden[0])
    return network.make_layered(self.n_in, self.n_out, self.hidden)


def full_case(n: int, batch: int, steps: int, reference: bool = True) -> Case:
  """`full` network of `n` neurons: `n / 4` inputs, `n / 4` outputs, `n / 2` hidden."""
  return Case(f"full-{n}", "full", n // 4, n // 4, (n // 2,), batch, steps, reference)


def layered_case(name: str, n_io: int, hidden: tuple[int, ...], batch: int, steps: int) -> Case:
  return Case(name, "layered", n_io, n_io, hidden, batch, steps)


def episode_steps(snippets: int) -> int:
  """Steps of one episode of K snippets under the default protocol (present 2 steps each, a delay of
  2, every snippet queried for 2 steps): `4 K + 2` (34 at K = 8, 130 at K = 32, 770 at K = 192)."""
  return 4 * snippets + 2


def train_case(n: int, snippets: int, batch: int = 16, **fields) -> Case:
  """`train-<n>`: the meta-gradient at the shape of a meta step on a `full` network of `n` neurons,
  `batch` episodes of K = `snippets` (the default run is `train-64`: N = 64, B = 16, K = 8, T = 34)."""
  return dataclasses.replace(full_case(n, batch, episode_steps(snippets)), name=f"train-{n}", **fields)


def eval_case(n: int, snippets: int, **fields) -> Case:
  """`eval-<n>`: the forward recall of one episode of K = `snippets` on a `full` network of `n` neurons
  (no meta-gradient)."""
  case = full_case(n, 1, episode_steps(snippets))
  return dataclasses.replace(case, name=f"eval-{n}", forward_only=True, **fields)


@dataclasses.dataclass(frozen=True)
class HostCase:
  """One training step of a host model around a frozen `PlasticMemory` (learned_rules/benchmark_host.py).

  `batch` token sequences of `pairs` (key, value) pairs, written into one memory each and read back at
  one query. The memory is the shipped `rule` (its network), or with `rule=""` a fresh random rule on
  a `full` network of `n_in`, `n_out`, `n_hidden` neurons.
  """

  name: str
  batch: int
  pairs: int
  rule: str = "hetero"
  n_in: int = 16
  n_out: int = 16
  n_hidden: int = 32
  num_tokens: int = 32  # key and value vocabularies
  repeats: int | None = None
  warmup: bool = True
  reference: bool = True


@dataclasses.dataclass(frozen=True)
class Plan:
  """The sizes of one plan (`full`, `quick`, `tiny`)."""

  cases: tuple[Case | HostCase, ...]
  remat_case: Case  # timed under every remat policy
  memory_case: Case  # compiled at its batch for each of `memory_steps` (its own steps unused)
  memory_steps: tuple[int, ...]
  million_case: Case | None
  matmul_n: int
  repeats: int


# Layered with hidden (200, 200) between 64 inputs and 64 outputs: 65,600 synapses, within 0.5% of
# full-256's 65,280, on 528 neurons (the reference then computes 528^2 = 278,784 pairs).
PLANS = {
  "full": Plan(
    cases=(
      full_case(64, 16, 32),
      full_case(256, 8, 16),
      full_case(1024, 4, 8),
      layered_case("layered-256", 64, (200, 200), 8, 16),
      train_case(64, 8),
      train_case(128, 32, reference_batch=4),
      HostCase("host-64", batch=32, pairs=8),
      # One call of about a minute and a half: timed once, without a warm-up call.
      eval_case(1024, 192, reference=False, repeats=1, warmup=False),
    ),
    remat_case=full_case(256, 8, 16),
    memory_case=full_case(256, 4, 64),
    memory_steps=(64, 256, 1024),
    million_case=full_case(1024, 4, 64),
    matmul_n=4096,
    repeats=3,
  ),
  "quick": Plan(
    cases=(
      full_case(64, 8, 16),
      full_case(256, 2, 8),
      full_case(1024, 1, 2, reference=False),
      layered_case("layered-256", 64, (200, 200), 2, 4),
      train_case(64, 8),
      # The reference's compiled peak at B = 16 is 16 GiB: it runs 4 of the 16 episodes.
      train_case(128, 32, repeats=1, reference_batch=4),
      HostCase("host-64", batch=32, pairs=8),
      # One call of about a minute and a half: timed once, without a warm-up call.
      eval_case(1024, 192, reference=False, repeats=1, warmup=False),
    ),
    remat_case=full_case(256, 2, 8),
    memory_case=full_case(64, 4, 64),
    memory_steps=(64, 256, 1024),
    million_case=None,
    matmul_n=2048,
    repeats=2,
  ),
  "tiny": Plan(
    cases=(
      full_case(16, 2, 4),
      # The reference of one of the two networks: the path train-128 takes.
      dataclasses.replace(layered_case("layered-16", 4, (4, 4), 2, 4), reference_batch=1),
      HostCase("host-16", batch=2, pairs=2, rule="", n_in=4, n_out=4, n_hidden=8, num_tokens=4),
      eval_case(16, 2),
    ),
    remat_case=full_case(16, 2, 4),
    memory_case=full_case(16, 2, 4),
    memory_steps=(4, 16),
    million_case=None,
    matmul_n=128,
    repeats=1,
  ),
}


def flops_per_synapse_step(spec: rules.RuleSpec) -> int:
  """Forward FLOPs `F` of `f_s` for one synapse-step in the straightforward form (module docstring)."""
  ds, da, e, h = spec.synapse_dim, spec.act_dim, spec.emb_dim, spec.hidden
  first = 2 * (ds + 2 * (da + e)) * h
  bilinear = 2 * h * da * da + 2 * h * da if spec.bilinear else 0
  second = 2 * h * ds
  return first + bilinear + second


# ----------------------------------------------------------------------------------------------------
# The programs: batched forward and meta-gradient, for the library and for the reference.


def library_forward(theta, topo, problem: unroll.Problem, states, xs):
  """`B` library unrolls: `xs` `[B, T, N]` -> final states and readouts `[B, T, n_out]`."""
  return jax.vmap(unroll.unroll, in_axes=(None, None, None, 0, 0))(theta, topo, problem, states, xs)


def reference_forward(theta, topo, spec: rules.RuleSpec, states, xs):
  """`B` reference unrolls: `xs` `[B, T, N]` -> final states and readouts `[B, T, n_out]`."""
  return jax.vmap(reference.unroll, in_axes=(None, None, None, 0, 0))(theta, topo, spec, states, xs)


@jax.jit
def dense_states(topo: network.Topology, states: network.NetState) -> reference.DenseState:
  """A batch of library states `[B, ...]` in the reference's dense form."""
  return jax.vmap(reference.dense_state, in_axes=(None, 0))(topo, states)


def mse_loss(forward: Callable, static) -> Callable:
  """`loss(theta, topo, states, xs, targets)`: mean squared error of `forward`'s readouts."""

  def loss(theta, topo, states, xs, targets):
    _, readout = forward(theta, topo, static, states, xs)
    return jnp.mean(jnp.square(readout - targets))

  return loss


def programs(impl: str, problem: unroll.Problem) -> tuple[Callable, Callable]:
  """Jitted `(forward, meta_gradient)` of `impl` ("library" or "reference"), both taking
  `(theta, topo, states, xs)` (the meta-gradient also `targets`)."""
  if impl == "library":
    forward, static = library_forward, problem
  else:
    forward, static = reference_forward, problem.rule
  fwd = jax.jit(lambda theta, topo, states, xs: forward(theta, topo, static, states, xs))
  return fwd, jax.jit(jax.grad(mse_loss(forward, static)))


# ----------------------------------------------------------------------------------------------------
# What one case's programs are called with.


def make_problem(
  topo: network.Topology, remat: str | None = None, chunk_synapses: int | None = None
) -> unroll.Problem:
  """Default rule sizes for `topo`, the given remat policy (default: the library's) and synapses per
  chunk of the library's synapse update (default: `rules.RuleSpec`'s; 0: whole blocks)."""
  spec = rules.RuleSpec(num_types=topo.num_types)
  if chunk_synapses is not None:
    spec = dataclasses.replace(spec, chunk_synapses=chunk_synapses)
  task = tasks.TaskSpec(num_neurons=topo.num_neurons, n_in=topo.n_in, n_out=topo.n_out)
  return unroll.Problem(rule=spec, task=task, remat=remat or unroll.DEFAULT_REMAT)


def make_inputs(key: jax.Array, case: Case) -> tuple[jax.Array, jax.Array]:
  """Inputs `[B, T, N]` (+-1 on the inputs and outputs, 0 on hidden) and +-1 targets `[B, T, n_out]`."""
  steps = case.steps
  kx, kt = jax.random.split(key)
  n_io = case.n_in + case.n_out
  bits = jax.random.rademacher(kx, (case.batch, steps, n_io), jnp.float32)
  xs = jnp.concatenate([bits, jnp.zeros((case.batch, steps, case.num_neurons - n_io))], axis=-1)
  targets = jax.random.rademacher(kt, (case.batch, steps, case.n_out), jnp.float32)
  return xs, targets


@dataclasses.dataclass
class Setup:
  """Everything one case's programs are called with."""

  topo: network.Topology
  problem: unroll.Problem
  theta: rules.Theta
  states: network.NetState
  xs: jax.Array
  targets: jax.Array

  @property
  def synapses(self) -> int:
    return self.topo.num_synapses


def _key(seed: int) -> jax.Array:
  # RBG keys: random numbers as good for a benchmark, and programs several times faster to compile.
  return jax.random.key(seed, impl="unsafe_rbg")


@functools.cache
def default_theta(num_types: int, seed: int = 0) -> rules.Theta:
  """`rules.init_theta` at the default rule sizes (compiled once per type count: a few seconds)."""
  return rules.init_theta(_key(seed), rules.RuleSpec(num_types=num_types))


@functools.partial(jax.jit, static_argnames=("case", "seed"))
def _init_arrays(theta: rules.Theta, topo: network.Topology, case: Case, seed: int):
  """Initial states and inputs of a case, in one compiled program."""
  k_state, k_data = jax.random.split(_key(seed))
  problem = make_problem(topo)  # only its rule sizes and init_noise are used here
  states = unroll.init_batch_states(theta, topo, problem, k_state, case.batch)
  return (states, *make_inputs(k_data, case))


def make_setup(
  case: Case,
  remat: str | None = None,
  seed: int = 0,
  theta: rules.Theta | None = None,
  chunk_synapses: int | None = None,
) -> Setup:
  """Topology, problem, `theta` (`default_theta` unless given), initial states and inputs of a case."""
  topo = case.make_topology()
  problem = make_problem(topo, remat, chunk_synapses)
  theta = default_theta(topo.num_types, seed) if theta is None else theta
  return Setup(topo, problem, theta, *_init_arrays(theta, topo, case, seed))


# ----------------------------------------------------------------------------------------------------
# Compiling and timing a program.


def measure(fn: Callable, args: Sequence[Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
  """Best wall time in seconds of `fn(*args)` over `repeats` calls, after one warm-up call (unless
  `warmup` is False: then the first call is timed too).

  Returns the time and the first call's output. Every call is waited for with `block_until_ready`.
  """
  best, out = math.inf, None
  if warmup:
    out = jax.block_until_ready(fn(*args))
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    result = jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
    out = result if out is None else out
  return best, out


def compiled_peak_bytes(compiled) -> int | None:
  """temp + argument + output bytes of XLA's memory analysis of a compiled program; None if unknown."""
  try:
    stats = compiled.memory_analysis()
  except (AttributeError, NotImplementedError, RuntimeError):
    return None
  if isinstance(stats, list | tuple):
    stats = stats[0] if stats else None
  if stats is None:
    return None
  sizes = [getattr(stats, f"{name}_size_in_bytes", None) for name in ("temp", "argument", "output")]
  return None if None in sizes else sum(int(size) for size in sizes)


def peak_rss_bytes() -> int:
  """Peak resident set size of this process so far (Linux reports `ru_maxrss` in KiB)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def default_max_run_bytes() -> int:
  """60% of the machine's physical memory."""
  try:
    return int(0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
  except (ValueError, OSError, AttributeError):
    return 8 << 30


def matmul_flops_per_s(n: int, repeats: int = 3) -> float:
  """FLOP/s of a jitted float32 `[n, n] @ [n, n]` (`2 n^3` FLOPs), best of `repeats` calls."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.standard_normal((n, n), np.float32)) for _ in range(2))
  seconds, _ = measure(jax.jit(jnp.matmul), (a, b), repeats)
  return 2.0 * n**3 / seconds


def ratio(a: float | None, b: float | None) -> float | None:
  """`a / b`, or None if either is missing or `b` is 0."""
  return None if a is None or b is None or b == 0 else a / b


def roofline(steps_per_s: float | None, flops_per_step: float, matmul: float) -> float | None:
  """The fraction of the matmul FLOP rate `matmul` that `steps_per_s` at `flops_per_step` reaches."""
  return None if steps_per_s is None else steps_per_s * flops_per_step / matmul


def max_abs_diff(a, b) -> float | None:
  """Largest absolute difference of two pytrees of arrays (None if either is missing)."""
  if a is None or b is None:
    return None
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(diffs))


def gib(num_bytes: int | None) -> str:
  """`num_bytes` in GiB, for the log ("?" if unknown)."""
  return "?" if num_bytes is None else f"{num_bytes / 2**30:.2f} GiB"


@dataclasses.dataclass
class Settings:
  """How programs are compiled and timed, and the meta-gradients timed so far (for reuse)."""

  repeats: int
  max_run_bytes: int  # programs whose compiled peak exceeds this are not run
  compile_threads: int
  chunk_synapses: int | None = None  # of the library's synapse update; None: rules.RuleSpec's
  meta_grads: dict = dataclasses.field(default_factory=dict)  # (case, remat) -> Timed


@dataclasses.dataclass
class Timed:
  """A program's throughput in synapse-steps/s (None if not run), compiled peak bytes, the output
  of its warm-up call, and why it was not run."""

  steps_per_s: float | None
  peak_bytes: int | None
  output: Any = None
  note: str | None = None


def compile_all(jobs: dict, threads: int, compiler_options: dict | None = None) -> dict:
  """Lowers every `label: (jitted, args)` of `jobs`, then compiles them on `threads` threads (XLA
  compiles without holding the GIL, and one compile uses about one core). Returns label -> compiled."""
  lowered = {label: jitted.lower(*args) for label, (jitted, args) in jobs.items()}

  def compile_one(label):
    start = time.perf_counter()
    compiled = lowered[label].compile(compiler_options)
    logging.info("  %s: compiled in %.1f s", label, time.perf_counter() - start)
    return compiled

  with concurrent.futures.ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:
    return dict(zip(lowered, pool.map(compile_one, lowered), strict=True))


def time_compiled(
  compiled,
  args: Sequence[Any],
  work: float,
  settings: Settings,
  label: str,
  case: Case | HostCase | None = None,
) -> Timed:
  """Times `compiled(*args)` unless its compiled peak exceeds `settings.max_run_bytes`.

  `work` is the synapse-steps of one call; the throughput is `work / best seconds`. A `case` may set
  its own repeats and skip the warm-up call.
  """
  peak = compiled_peak_bytes(compiled)
  if peak is not None and peak > settings.max_run_bytes:
    note = f"not run: compiled peak {gib(peak)} exceeds max_run_gb ({gib(settings.max_run_bytes)})"
    logging.info("  %s: %s", label, note)
    return Timed(None, peak, note=note)
  repeats = settings.repeats if case is None or case.repeats is None else case.repeats
  seconds, out = measure(compiled, args, repeats, warmup=case is None or case.warmup)
  logging.info(
    "  %s: peak %s, %.4f s per call, %.2f M synapse-steps/s", label, gib(peak), seconds, work / seconds / 1e6
  )
  return Timed(work / seconds, peak, out)
