r"""Throughput and memory of the library's unroll and meta-gradient, against a straightforward reference.

  python -m experiments.benchmark --quick                 # at most about 3 minutes on 2 CPU cores
  python -m experiments.benchmark                         # every case, the sweeps, the million-synapse case
  python -m experiments.benchmark --cases=full-256,layered-256 --repeats=5 --out=/tmp/bench.json
  python -m experiments.benchmark --sections=remat --remat_policies=none,step
  python -m experiments.benchmark --tiny --out=/tmp/tiny.json   # seconds; the sizes the tests use

Sizes (`PLANS`): `full` networks of N = 64, 256, 1024 neurons (N/4 inputs, N/4 outputs, N/2 hidden)
at (B, T) = (16, 32), (8, 16), (4, 8), and `layered-256` (64 inputs, hidden layers of 200 and 200,
64 outputs: 65,600 synapses against full-256's 65,280) at (8, 16). `--quick` runs smaller batches and
unrolls, full-1024 at B = 1, T = 2 without the reference, the sweeps at N = 64 for memory, and no
million-synapse case. A case's programs are compiled together (`--compile_threads`), then timed one
by one.

Everything is measured in one process, after compilation and one warm-up call, as the best wall time
of `--repeats` calls. For each case (a topology, a batch `B` of networks, an unroll of `T` steps):

- forward throughput: `jax.jit` of the batched unroll, in synapse-steps per second
  (`B * num_synapses * T / seconds`);
- meta-gradient throughput: `jax.jit(jax.grad(loss))` in `theta`, where `loss` is the mean squared
  error of the readouts against random +-1 targets over the whole unroll; the inputs are random +-1
  on the input and output neurons and 0 on the hidden ones;
- peak memory of the meta-gradient: XLA's compiled estimate (temp + argument + output bytes of
  `memory_analysis()`), and the process's peak RSS after the case (monotone over the process).

Both are measured for the library (`unroll.unroll`, its default remat policy) and for the REFERENCE
below: the straightforward form, dense `[N, N, Ds]` synapses with a dense mask, the whole first layer
of `f_s` applied to each synapse's concatenated inputs, vmapped over pre then post, and a plain
`lax.scan` without rematerialisation. It computes the same numbers (each case records the largest
readout difference of the two forwards; tests/test_benchmark.py checks it).

FLOP convention (`flops_convention` in the JSON): `F`, the forward FLOPs of `f_s` per synapse-step in
the straightforward form (first layer `2 (Ds + 2 (Da + E)) H`, bilinear term `2 H Da^2 + 2 H Da`,
second layer `2 H Ds`; body updates, messages and readouts not counted), and a meta-gradient costs
`3 F` per synapse-step (backward = 2x forward). `fraction_of_matmul_roofline` is the meta-gradient's
synapse-steps per second times `3 F` over the FLOP/s of a large float32 matmul measured in the same
process. The library's split first layer does fewer FLOPs than `F`, so this is an effective rate.

Two more sections: the library meta-gradient timed under every policy of `unroll.REMAT_POLICIES`
(`remat_policies`), and its compiled peak bytes against the unroll length (`memory_vs_T`, compiled
only, with LLVM's optimisation off, which leaves the buffer assignment and so the peak unchanged).
The full run also runs the target size once, a full network of 1024 neurons (1,047,552
synapses), `B = 4`, `T = 64` (`million_synapse_case`). Programs whose compiled peak exceeds
`--max_run_gb` are compiled but not run, and their throughputs are `null` with a note. Writes `--out`
(JSON) and prints the tables.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments import flagutil
from learned_rules import metrics as metrics_lib
from learned_rules import network, rules, tasks, unroll

SECTIONS = ("cases", "remat", "memory", "million")
FLOPS_CONVENTION = (
  "F = forward FLOPs of f_s per synapse-step in the straightforward form: first layer "
  "2*(Ds + 2*(Da+E))*H, bilinear 2*H*Da*Da + 2*H*Da, second layer 2*H*Ds (body updates, messages "
  "and readouts not counted); a meta-gradient costs 3*F per synapse-step (backward = 2x forward)."
)

# For programs compiled only for their memory analysis (`memory_vs_T`).
MEMORY_ONLY_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}

_QUICK = flagutil.define(
  flags.DEFINE_bool, "quick", False, "Smaller sizes: the whole run in at most about 3 minutes."
)
_TINY = flagutil.define(
  flags.DEFINE_bool, "tiny", False, "Smoke-test sizes (seconds): what tests/test_benchmark.py runs."
)
_OUT = flagutil.define(flags.DEFINE_string, "out", "runs/benchmark.json", "Where to write the JSON results.")
_CASES = flagutil.define(
  flags.DEFINE_list, "cases", [], "Case names to run (default: every case of the mode)."
)
_SECTIONS = flagutil.define(
  flags.DEFINE_list, "sections", list(SECTIONS), f"Sections to run, among {SECTIONS}."
)
_REPEATS = flagutil.define(
  flags.DEFINE_integer, "repeats", None, "Timed calls per program (default 3; --quick 2; --tiny 1)."
)
_REMAT_POLICIES = flagutil.define(
  flags.DEFINE_list,
  "remat_policies",
  [],
  "Remat policies to time and sweep (default: all of unroll.REMAT_POLICIES).",
)
_COMPILE_THREADS = flagutil.define(
  flags.DEFINE_integer,
  "compile_threads",
  None,
  "Programs compiled at once, before they are timed one by one (default: CPU count).",
)
_CHUNK_SYNAPSES = flagutil.define(
  flags.DEFINE_integer,
  "chunk_synapses",
  None,
  "Synapses per chunk of the library's synapse update (0: whole blocks); default rules.CHUNK_SYNAPSES.",
)
_MAX_RUN_GB = flagutil.define(
  flags.DEFINE_float,
  "max_run_gb",
  None,
  "Compile but do not run programs whose compiled peak exceeds this (default: 60% of RAM).",
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

  @property
  def num_neurons(self) -> int:
    return self.n_in + self.n_out + sum(self.hidden)

  def make_topology(self) -> network.Topology:
    if self.topology == "full":
      return network.make_full(self.n_in, self.n_out, self.hidden[0])
    return network.make_layered(self.n_in, self.n_out, self.hidden)


def full_case(n: int, batch: int, steps: int, reference: bool = True) -> Case:
  """`full` network of `n` neurons: `n / 4` inputs, `n / 4` outputs, `n / 2` hidden."""
  return Case(f"full-{n}", "full", n // 4, n // 4, (n // 2,), batch, steps, reference)


def layered_case(name: str, n_io: int, hidden: tuple[int, ...], batch: int, steps: int) -> Case:
  return Case(name, "layered", n_io, n_io, hidden, batch, steps)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The sizes of one mode (full, `--quick`, `--tiny`)."""

  cases: tuple[Case, ...]
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
    ),
    remat_case=full_case(256, 2, 8),
    memory_case=full_case(64, 4, 64),
    memory_steps=(64, 256, 1024),
    million_case=None,
    matmul_n=2048,
    repeats=2,
  ),
  "tiny": Plan(
    cases=(full_case(16, 2, 4), layered_case("layered-16", 4, (4, 4), 2, 4)),
    remat_case=full_case(16, 2, 4),
    memory_case=full_case(16, 2, 4),
    memory_steps=(4, 16),
    million_case=None,
    matmul_n=128,
    repeats=1,
  ),
}


# ----------------------------------------------------------------------------------------------------
# Measurement helpers.


def measure(fn: Callable, args: Sequence[Any], repeats: int) -> tuple[float, Any]:
  """Best wall time in seconds of `fn(*args)` over `repeats` calls, after one warm-up call.

  Returns the time and the warm-up call's output. Every call is waited for with `block_until_ready`.
  """
  out = jax.block_until_ready(fn(*args))
  best = math.inf
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
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
  total = 0
  for name in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
    value = getattr(stats, name, None)
    if value is None:
      return None
    total += int(value)
  return total


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


def flops_per_synapse_step(spec: rules.RuleSpec) -> int:
  """Forward FLOPs `F` of `f_s` for one synapse-step in the straightforward form (module docstring)."""
  ds, da, e, h = spec.synapse_dim, spec.act_dim, spec.emb_dim, spec.hidden
  first = 2 * (ds + 2 * (da + e)) * h
  bilinear = 2 * h * da * da + 2 * h * da if spec.bilinear else 0
  second = 2 * h * ds
  return first + bilinear + second


# ----------------------------------------------------------------------------------------------------
# The reference: dense synapses, the whole first layer per synapse, no rematerialisation.


class ReferenceState(NamedTuple):
  """`bodies` `[N, Db]`, `synapses` `[N, N, Ds]` dense and post-major, zero where the mask is 0."""

  bodies: jax.Array
  synapses: jax.Array


def reference_synapse_update(
  theta: rules.Theta,
  syn: jax.Array,
  a_post: jax.Array,
  a_pre: jax.Array,
  emb_post: jax.Array,
  emb_pre: jax.Array,
) -> jax.Array:
  """`rules.synapse_update` in one piece: `[s, a_post, e_post, a_pre, e_pre] @ W1`, `[Ds]` -> `[Ds]`.

  Args:
    syn: `[Ds]`; a_post, a_pre: `[Da]`; emb_post, emb_pre: `[E]`.
  """
  p = theta["synapse"]
  inputs = jnp.concatenate([syn, a_post, emb_post, a_pre, emb_pre])  # [Ds + 2 (Da + E)]
  w1 = jnp.concatenate([p["w_s"], p["w_post"], p["w_pre"]], axis=0)  # [Ds + 2 (Da + E), H]
  pre_act = inputs @ w1 + p["b1"]
  if "w_bi" in p:
    pre_act = pre_act + jnp.einsum("d,kde,e->k", a_post, p["w_bi"], a_pre)
  hid = jnp.tanh(pre_act)
  delta = jnp.tanh(hid @ p["w2"] + p["b2"])
  return jax.nn.sigmoid(p["decay_logit"]) * syn + jax.nn.sigmoid(p["rate_logit"]) * delta


def reference_step(
  theta: rules.Theta, topo: network.Topology, spec: rules.RuleSpec, state: ReferenceState, x: jax.Array
) -> tuple[ReferenceState, jax.Array]:
  """One step of the network in the straightforward form; `x` `[N]`; returns readouts `[n_out]`."""
  emb = theta["type_emb"][topo.types]  # [N, E]
  act_fn = jax.vmap(rules.activation, in_axes=(None, 0, 0, None))
  act = act_fn(theta, state.bodies, x, spec)  # [N, Da]
  msg = network.messages(state.synapses, topo.mask, act, spec.message_norm)  # [N, Ds*Da]
  bodies = jax.vmap(rules.body_update, in_axes=(None, 0, 0, 0, 0, None, None))(
    theta, state.bodies, msg, x, emb, spec, topo.body_recurrence
  )
  syn = state.synapses
  if topo.synapse_updates:
    new_act = act_fn(theta, bodies, x, spec)
    per_pre = jax.vmap(reference_synapse_update, in_axes=(None, 0, None, 0, None, 0))
    per_pair = jax.vmap(per_pre, in_axes=(None, 0, 0, None, 0, None))
    new_syn = per_pair(theta, syn, new_act, new_act, emb, emb)  # [N, N, Ds]
    syn = jnp.where(topo.mask[..., None] > 0, new_syn, syn)
  out_bodies = bodies[topo.n_in : topo.n_in + topo.n_out]
  readout = jax.vmap(rules.readout, in_axes=(None, 0))(theta, out_bodies)
  return ReferenceState(bodies, syn), readout


def reference_unroll(
  theta: rules.Theta, topo: network.Topology, spec: rules.RuleSpec, state: ReferenceState, xs: jax.Array
) -> tuple[ReferenceState, jax.Array]:
  """Plain `lax.scan` of `reference_step` over `xs` `[T, N]`: the final state and readouts `[T, n_out]`."""
  return jax.lax.scan(lambda s, x: reference_step(theta, topo, spec, s, x), state, xs)


@jax.jit
def reference_states(topo: network.Topology, states: network.NetState) -> ReferenceState:
  """A batch of library states `[B, ...]` in the reference's dense form."""
  dense = jax.vmap(network.dense_synapses, in_axes=(None, 0))(topo, states.synapses)
  return ReferenceState(states.bodies, dense)


# ----------------------------------------------------------------------------------------------------
# The programs: batched forward and meta-gradient, for the library and for the reference.


def library_forward(theta, topo, problem: unroll.Problem, states, xs):
  """`B` library unrolls: `xs` `[B, T, N]` -> final states and readouts `[B, T, n_out]`."""
  return jax.vmap(unroll.unroll, in_axes=(None, None, None, 0, 0))(theta, topo, problem, states, xs)


def reference_forward(theta, topo, spec: rules.RuleSpec, states, xs):
  """`B` reference unrolls: `xs` `[B, T, N]` -> final states and readouts `[B, T, n_out]`."""
  return jax.vmap(reference_unroll, in_axes=(None, None, None, 0, 0))(theta, topo, spec, states, xs)


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


def make_problem(topo: network.Topology, remat: str | None = None) -> unroll.Problem:
  """Default rule sizes and the given remat policy (default: the library's) for `topo`."""
  spec = rules.RuleSpec(num_types=topo.num_types)
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
def default_theta(spec: rules.RuleSpec, seed: int = 0) -> rules.Theta:
  """`rules.init_theta` (compiled once per spec: a few seconds here)."""
  return rules.init_theta(_key(seed), spec)


@functools.partial(jax.jit, static_argnames=("case", "seed"))
def _init_arrays(theta: rules.Theta, topo: network.Topology, case: Case, seed: int):
  """Initial states and inputs of a case, in one compiled program."""
  k_state, k_data = jax.random.split(_key(seed))
  problem = make_problem(topo)  # only its rule sizes and init_noise are used here
  states = unroll.init_batch_states(theta, topo, problem, k_state, case.batch)
  return (states, *make_inputs(k_data, case))


def make_setup(
  case: Case, remat: str | None = None, seed: int = 0, theta: rules.Theta | None = None
) -> Setup:
  """Topology, problem, `theta` (`init_theta` unless given), initial states and inputs of a case."""
  topo = case.make_topology()
  problem = make_problem(topo, remat)
  theta = default_theta(problem.rule, seed) if theta is None else theta
  return Setup(topo, problem, theta, *_init_arrays(theta, topo, case, seed))


def _gb(num_bytes: int | None) -> str:
  return "?" if num_bytes is None else f"{num_bytes / 2**30:.2f} GiB"


@dataclasses.dataclass
class Settings:
  """How programs are compiled and timed, and the meta-gradients timed so far (for reuse)."""

  repeats: int
  max_run_bytes: int  # programs whose compiled peak exceeds this are not run
  compile_threads: int
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


def time_compiled(compiled, args: Sequence[Any], work: float, settings: Settings, label: str) -> Timed:
  """Times `compiled(*args)` unless its compiled peak exceeds `settings.max_run_bytes`.

  `work` is the synapse-steps of one call; the throughput is `work / best seconds`.
  """
  peak = compiled_peak_bytes(compiled)
  if peak is not None and peak > settings.max_run_bytes:
    note = f"not run: compiled peak {_gb(peak)} exceeds --max_run_gb ({_gb(settings.max_run_bytes)})"
    logging.info("  %s: %s", label, note)
    return Timed(None, peak, note=note)
  seconds, out = measure(compiled, args, settings.repeats)
  logging.info(
    "  %s: peak %s, %.4f s per call, %.2f M synapse-steps/s", label, _gb(peak), seconds, work / seconds / 1e6
  )
  return Timed(work / seconds, peak, out)


def _ratio(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None or b == 0 else a / b


def _roofline(steps_per_s: float | None, flops_per_step: float, matmul: float) -> float | None:
  return None if steps_per_s is None else steps_per_s * flops_per_step / matmul


def run_case(case: Case, settings: Settings, matmul: float) -> dict:
  """Library and reference forward and meta-gradient of one case; one JSON record."""
  s = make_setup(case)
  work = case.batch * s.synapses * case.steps
  flops = 3 * flops_per_synapse_step(s.problem.rule)
  logging.info(
    "case %s: %s, N=%d, %d synapses, B=%d, T=%d, remat=%s",
    case.name,
    case.topology,
    case.num_neurons,
    s.synapses,
    case.batch,
    case.steps,
    s.problem.remat,
  )
  args = (s.theta, s.topo, s.states, s.xs)
  jobs = dict(zip(("library forward", "library meta-gradient"), programs("library", s.problem), strict=True))
  jobs = {
    label: (jitted, args if "forward" in label else (*args, s.targets)) for label, jitted in jobs.items()
  }
  if case.reference:
    ref_args = (s.theta, s.topo, reference_states(s.topo, s.states), s.xs)
    ref_fwd, ref_grad = programs("reference", s.problem)
    jobs["reference forward"] = (ref_fwd, ref_args)
    jobs["reference meta-gradient"] = (ref_grad, (*ref_args, s.targets))
  compiled = compile_all(jobs, settings.compile_threads)
  timed = {label: time_compiled(compiled[label], jobs[label][1], work, settings, label) for label in jobs}
  none = Timed(None, None)
  lib_fwd, lib_grad = timed["library forward"], timed["library meta-gradient"]
  ref_fwd, ref_grad = timed.get("reference forward", none), timed.get("reference meta-gradient", none)
  settings.meta_grads[(case, s.problem.remat)] = lib_grad
  notes = [f"{label}: {t.note}" for label, t in timed.items() if t.note]
  if not case.reference:
    notes.append("reference not run at this size (too slow)")
  diff = None
  if lib_fwd.output is not None and ref_fwd.output is not None:
    diff = float(np.max(np.abs(np.asarray(lib_fwd.output[1]) - np.asarray(ref_fwd.output[1]))))
  return {
    "name": case.name,
    "topology": case.topology,
    "N": case.num_neurons,
    "synapses": s.synapses,
    "B": case.batch,
    "T": case.steps,
    "remat": s.problem.remat,
    "forward_synapse_steps_per_s": lib_fwd.steps_per_s,
    "meta_grad_synapse_steps_per_s": lib_grad.steps_per_s,
    "reference_forward_synapse_steps_per_s": ref_fwd.steps_per_s,
    "reference_meta_grad_synapse_steps_per_s": ref_grad.steps_per_s,
    "speedup": _ratio(lib_grad.steps_per_s, ref_grad.steps_per_s),
    "forward_speedup": _ratio(lib_fwd.steps_per_s, ref_fwd.steps_per_s),
    "fraction_of_matmul_roofline": _roofline(lib_grad.steps_per_s, flops, matmul),
    "reference_fraction_of_matmul_roofline": _roofline(ref_grad.steps_per_s, flops, matmul),
    "peak_bytes": lib_grad.peak_bytes,
    "reference_peak_bytes": ref_grad.peak_bytes,
    "forward_peak_bytes": lib_fwd.peak_bytes,
    "reference_forward_peak_bytes": ref_fwd.peak_bytes,
    "peak_rss_bytes": peak_rss_bytes(),
    "max_abs_readout_diff": diff,
    "note": "; ".join(notes) or None,
  }


def run_remat_policies(case: Case, policies: Sequence[str], settings: Settings) -> list[dict]:
  """The library meta-gradient of `case` timed under each remat policy (reusing a case's program)."""
  logging.info("remat policies %s: %s, B=%d, T=%d", list(policies), case.name, case.batch, case.steps)
  todo = [remat for remat in policies if (case, remat) not in settings.meta_grads]
  setups = {remat: make_setup(case, remat) for remat in todo}
  jobs = {}
  for remat, s in setups.items():
    args = (s.theta, s.topo, s.states, s.xs, s.targets)
    jobs[f"meta-gradient, remat={remat}"] = (programs("library", s.problem)[1], args)
  compiled = compile_all(jobs, settings.compile_threads)
  for remat, s in setups.items():
    label = f"meta-gradient, remat={remat}"
    work = case.batch * s.synapses * case.steps
    settings.meta_grads[(case, remat)] = time_compiled(compiled[label], jobs[label][1], work, settings, label)
  records = []
  for remat in policies:
    timed = settings.meta_grads[(case, remat)]
    records.append(
      {
        "remat": remat,
        "name": case.name,
        "N": case.num_neurons,
        "B": case.batch,
        "T": case.steps,
        "meta_grad_synapse_steps_per_s": timed.steps_per_s,
        "peak_bytes": timed.peak_bytes,
        "note": timed.note,
      }
    )
  return records


def run_memory_vs_steps(
  case: Case, steps: Sequence[int], policies: Sequence[str], settings: Settings
) -> list[dict]:
  """Compiled peak bytes of the library meta-gradient against the unroll length `T` (compiled only;
  a program an earlier section compiled is reused)."""
  logging.info(
    "memory against T: %s, B=%d, T=%s, remat %s", case.name, case.batch, list(steps), list(policies)
  )
  jobs = {}
  for remat in policies:
    s = make_setup(case, remat)
    grad = programs("library", s.problem)[1]
    for t in steps:
      if (dataclasses.replace(case, steps=t), remat) not in settings.meta_grads:
        xs = jax.ShapeDtypeStruct((case.batch, t, case.num_neurons), jnp.float32)
        targets = jax.ShapeDtypeStruct((case.batch, t, case.n_out), jnp.float32)
        jobs[f"meta-gradient, remat={remat}, T={t}"] = (grad, (s.theta, s.topo, s.states, xs, targets))
  # Compiled, never run: LLVM's optimisation off halves the compile time and leaves XLA's buffer
  # assignment, hence the peak bytes, unchanged.
  compiled = compile_all(jobs, settings.compile_threads, MEMORY_ONLY_COMPILER_OPTIONS)
  records = []
  for remat in policies:
    for t in steps:
      label = f"meta-gradient, remat={remat}, T={t}"
      if label in compiled:
        peak = compiled_peak_bytes(compiled[label])
      else:
        peak = settings.meta_grads[(dataclasses.replace(case, steps=t), remat)].peak_bytes
      logging.info("  %s: peak %s", label, _gb(peak))
      records.append({"N": case.num_neurons, "B": case.batch, "T": t, "remat": remat, "peak_bytes": peak})
  return records


def run_million(case: Case, settings: Settings) -> dict:
  """The target size once: library meta-gradient with the default remat policy, compiled and run once."""
  s = make_setup(case)
  work = case.batch * s.synapses * case.steps
  record = {
    "name": case.name,
    "N": case.num_neurons,
    "synapses": s.synapses,
    "B": case.batch,
    "T": case.steps,
    "remat": s.problem.remat,
    "peak_bytes": None,
    "ran": False,
    "seconds": None,
    "meta_grad_synapse_steps_per_s": None,
    "peak_rss_bytes": None,
    "note": None,
  }
  logging.info("million-synapse case: %d synapses, B=%d, T=%d", s.synapses, case.batch, case.steps)
  args = (s.theta, s.topo, s.states, s.xs, s.targets)
  compiled = compile_all({"million-synapse meta-gradient": (programs("library", s.problem)[1], args)}, 1)
  compiled = compiled["million-synapse meta-gradient"]
  record["peak_bytes"] = compiled_peak_bytes(compiled)
  if record["peak_bytes"] is not None and record["peak_bytes"] > settings.max_run_bytes:
    record["note"] = f"not run: compiled peak exceeds --max_run_gb ({_gb(settings.max_run_bytes)})"
  else:
    try:
      start = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      record["seconds"] = time.perf_counter() - start
    except Exception as e:  # e.g. out of memory: recorded, not fatal
      record["note"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    else:
      record["ran"] = True
      record["meta_grad_synapse_steps_per_s"] = work / record["seconds"]
  record["peak_rss_bytes"] = peak_rss_bytes()
  logging.info(
    "million-synapse case: peak %s, ran %s, %s s", _gb(record["peak_bytes"]), record["ran"], record["seconds"]
  )
  return record


# ----------------------------------------------------------------------------------------------------
# Driver and tables.


def _m(value: float | None) -> str:
  return "-" if value is None else f"{value / 1e6:.2f}"


def _mb(value: int | None) -> str:
  return "-" if value is None else f"{value / 2**20:.1f}"


def _f(value: float | None, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def format_tables(results: dict) -> str:
  """The cases table (throughputs in M synapse-steps/s, peaks in MiB) and the two sweep tables."""
  lines = [
    f"device {results['device']}, jax {results['jax_version']}, matmul roofline "
    f"{results['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s (n={results['matmul_n']}), "
    f"F = {results['flops_per_synapse_step']} FLOPs per synapse-step",
  ]
  head = (
    f"{'name':<13}{'topology':>9}{'N':>6}{'synapses':>10}{'B':>4}{'T':>4}{'fwd M/s':>9}"
    f"{'grad M/s':>10}{'ref grad':>10}{'speedup':>9}{'roofline':>10}{'peak MB':>9}{'ref MB':>9}"
  )
  if results["cases"]:
    lines += ["", "throughput in M synapse-steps/s, compiled peaks in MiB", head]
    for c in results["cases"]:
      lines.append(
        f"{c['name']:<13}{c['topology']:>9}{c['N']:>6}{c['synapses']:>10}{c['B']:>4}{c['T']:>4}"
        f"{_m(c['forward_synapse_steps_per_s']):>9}{_m(c['meta_grad_synapse_steps_per_s']):>10}"
        f"{_m(c['reference_meta_grad_synapse_steps_per_s']):>10}{_f(c['speedup'], '.1f'):>9}"
        f"{_f(c['fraction_of_matmul_roofline'], '.3f'):>10}{_mb(c['peak_bytes']):>9}"
        f"{_mb(c['reference_peak_bytes']):>9}"
      )
    lines += [f"  {c['name']}: {c['note']}" for c in results["cases"] if c.get("note")]
  if results["remat_policies"]:
    first = results["remat_policies"][0]
    lines += [
      "",
      f"remat policies ({first['name']}, B={first['B']}, T={first['T']}; default {results['default_remat']})",
    ]
    lines.append(f"{'remat':<10}{'grad M/s':>10}{'peak MB':>10}")
    for r in results["remat_policies"]:
      lines.append(f"{r['remat']:<10}{_m(r['meta_grad_synapse_steps_per_s']):>10}{_mb(r['peak_bytes']):>10}")
  if results["memory_vs_T"]:
    steps = sorted({r["T"] for r in results["memory_vs_T"]})
    first = results["memory_vs_T"][0]
    lines += ["", f"meta-gradient compiled peak MiB against T (full N={first['N']}, B={first['B']})"]
    lines.append(f"{'remat':<10}" + "".join(f"{'T=' + str(t):>10}" for t in steps))
    by_policy: dict[str, dict[int, int | None]] = {}
    for r in results["memory_vs_T"]:
      by_policy.setdefault(r["remat"], {})[r["T"]] = r["peak_bytes"]
    for remat, peaks in by_policy.items():
      lines.append(f"{remat:<10}" + "".join(f"{_mb(peaks.get(t)):>10}" for t in steps))
  million = results.get("million_synapse_case")
  if million:
    lines += [
      "",
      f"million-synapse case ({million['synapses']} synapses, B={million['B']}, T={million['T']}, "
      f"remat={million['remat']}): peak {_mb(million['peak_bytes'])} MB, ran={million['ran']}, "
      f"{_f(million['seconds'], '.1f')} s, {_m(million['meta_grad_synapse_steps_per_s'])} M/s"
      + (f" ({million['note']})" if million["note"] else ""),
    ]
  return "\n".join(lines)


def check_args(
  plan: Plan, cases: Sequence[str], sections: Sequence[str], remat_policies: Sequence[str]
) -> tuple[tuple[Case, ...], tuple[str, ...]]:
  """The plan's cases named in `cases` (all if empty) and the remat policies to run (all if empty).

  Raises ValueError, before anything is compiled, on an unknown case, section or policy.
  """
  known = {c.name: c for c in plan.cases}
  checks = (
    ("case", cases, tuple(known)),
    ("section", sections, SECTIONS),
    ("remat policy", remat_policies, tuple(unroll.REMAT_POLICIES)),
  )
  for what, names, allowed in checks:
    unknown = [n for n in names if n not in allowed]
    if unknown:
      raise ValueError(f"unknown {what} {unknown}; one of {list(allowed)}")
  selected = tuple(known[n] for n in cases) if cases else plan.cases
  return selected, tuple(remat_policies) or tuple(unroll.REMAT_POLICIES)


def run(
  quick: bool = False,
  tiny: bool = False,
  cases: Sequence[str] = (),
  sections: Sequence[str] = SECTIONS,
  repeats: int | None = None,
  remat_policies: Sequence[str] = (),
  max_run_bytes: int | None = None,
  compile_threads: int | None = None,
  out: str | None = None,
) -> dict:
  """Runs the benchmark and returns the results dict (also written to `out` as JSON if given)."""
  start = time.perf_counter()
  plan = PLANS["tiny" if tiny else "quick" if quick else "full"]
  selected, policies = check_args(plan, cases, sections, remat_policies)
  selected = selected if "cases" in sections else ()
  settings = Settings(
    repeats=plan.repeats if repeats is None else repeats,
    max_run_bytes=default_max_run_bytes() if max_run_bytes is None else max_run_bytes,
    compile_threads=compile_threads or os.cpu_count() or 1,
  )
  matmul = matmul_flops_per_s(plan.matmul_n)
  logging.info("matmul roofline: %.1f GFLOP/s (n=%d)", matmul / 1e9, plan.matmul_n)
  results = {
    "mode": "tiny" if tiny else "quick" if quick else "full",
    "device": jax.devices()[0].device_kind,
    "jax_version": jax.__version__,
    "chunk_synapses": rules.RuleSpec.chunk_synapses,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "cpu_count": os.cpu_count(),
    "compile_threads": settings.compile_threads,
    "matmul_n": plan.matmul_n,
    "matmul_flops_per_s": matmul,
    "flops_per_synapse_step": flops_per_synapse_step(rules.RuleSpec()),
    "flops_convention": FLOPS_CONVENTION,
    "timing": f"best of {settings.repeats} calls after compilation and one warm-up call",
    "default_remat": unroll.DEFAULT_REMAT,
    "memory_vs_T_compiler_options": MEMORY_ONLY_COMPILER_OPTIONS,
    "cases": [],
    "remat_policies": [],
    "memory_vs_T": [],
    "million_synapse_case": None,
  }
  for case in selected:
    results["cases"].append(run_case(case, settings, matmul))
  if "remat" in sections:
    results["remat_policies"] = run_remat_policies(plan.remat_case, policies, settings)
  if "memory" in sections:
    results["memory_vs_T"] = run_memory_vs_steps(plan.memory_case, plan.memory_steps, policies, settings)
  if "million" in sections and plan.million_case is not None:
    results["million_synapse_case"] = run_million(plan.million_case, settings)
  results["wall_seconds"] = time.perf_counter() - start
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      json.dump(results, f, indent=2)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  plan = PLANS["tiny" if _TINY.value else "quick" if _QUICK.value else "full"]
  try:
    check_args(plan, _CASES.value, _SECTIONS.value, _REMAT_POLICIES.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if _CHUNK_SYNAPSES.value is not None:
    if _CHUNK_SYNAPSES.value < 0:
      raise app.UsageError("--chunk_synapses must be >= 0")
    rules.CHUNK_SYNAPSES = _CHUNK_SYNAPSES.value  # read when the programs are traced, below
  results = run(
    quick=_QUICK.value,
    tiny=_TINY.value,
    cases=_CASES.value,
    sections=_SECTIONS.value,
    repeats=_REPEATS.value,
    remat_policies=_REMAT_POLICIES.value,
    max_run_bytes=None if _MAX_RUN_GB.value is None else int(_MAX_RUN_GB.value * 2**30),
    compile_threads=_COMPILE_THREADS.value,
    out=_OUT.value,
  )
  print(format_tables(results))
  print(f"wall time {results['wall_seconds']:.0f} s; results in {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
