"""Running the benchmark: its sections, the results dict and the tables.

`run` measures what learned_rules/benchmark_cases.py describes (the cases, the reference, the FLOP
convention) and returns the results, also written as JSON; `format_tables` prints them. Everything is
measured in one process. The command is experiments/benchmark.py; docs/PERFORMANCE.md reports a run.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import logging

from learned_rules import benchmark_cases, benchmark_host, files, rules, unroll
from learned_rules.benchmark_cases import (
  PLANS,
  Case,
  HostCase,
  Settings,
  Timed,
  gib,
  make_setup,
  programs,
  ratio,
  roofline,
)

SECTIONS = ("cases", "remat", "memory", "million")

# For programs compiled only for their memory analysis (`memory_vs_T`).
MEMORY_ONLY_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


# ----------------------------------------------------------------------------------------------------
# The sections.


def _case_jobs(case: Case, s: benchmark_cases.Setup) -> dict:
  """`label: (jitted, args, synapse-steps per call)` of the library's, and unless `case.reference` is
  False the reference's, forward and (unless `case.forward_only`) meta-gradient on the setup `s` of
  `case`; the reference on the first `case.reference_batch` networks when that is set."""
  impls = [("library", (s.theta, s.topo, s.states, s.xs), s.targets, case.batch)]
  if case.reference:
    rb = case.reference_networks
    first = lambda tree: jax.tree.map(lambda a: a[:rb], tree)  # noqa: E731
    ref_states = benchmark_cases.dense_states(s.topo, first(s.states))
    impls.append(("reference", (s.theta, s.topo, ref_states, first(s.xs)), first(s.targets), rb))
  jobs = {}
  for impl, impl_args, targets, networks in impls:
    impl_work = networks * s.synapses * case.steps
    forward, meta_grad = programs(impl, s.problem)
    jobs[f"{impl} forward"] = (forward, impl_args, impl_work)
    if not case.forward_only:
      jobs[f"{impl} meta-gradient"] = (meta_grad, (*impl_args, targets), impl_work)
  return jobs


def _readout(timed: Timed, batch: int):
  """The first `batch` readouts `[batch, T, n_out]` of a forward's first call (None if not run)."""
  return None if timed.output is None else timed.output[1][:batch]


def _case_record(case: Case, s: benchmark_cases.Setup, timed: dict, matmul: float) -> dict:
  """The JSON record of a case from its programs' `Timed`, by label (`_case_jobs`)."""
  none = Timed(None, None)
  lib_fwd, lib_grad = timed["library forward"], timed.get("library meta-gradient", none)
  ref_fwd, ref_grad = timed.get("reference forward", none), timed.get("reference meta-gradient", none)
  notes = [f"{label}: {t.note}" for label, t in timed.items() if t.note]
  if not case.reference:
    notes.append("reference not run at this size (too slow)")
  if case.forward_only:
    notes.append("forward only (an evaluation): no meta-gradient")
  rb = case.reference_networks
  if case.reference and rb != case.batch:
    notes.append(f"reference run on the first {rb} networks (its peak at B = {case.batch} is too large)")
  forward_flops = benchmark_cases.flops_per_synapse_step(s.problem.rule)
  flops = 3 * forward_flops
  return {
    "name": case.name,
    "kind": "forward" if case.forward_only else "network",
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
    "speedup": ratio(lib_grad.steps_per_s, ref_grad.steps_per_s),
    "forward_speedup": ratio(lib_fwd.steps_per_s, ref_fwd.steps_per_s),
    "fraction_of_matmul_roofline": roofline(lib_grad.steps_per_s, flops, matmul),
    "reference_fraction_of_matmul_roofline": roofline(ref_grad.steps_per_s, flops, matmul),
    "forward_fraction_of_matmul_roofline": roofline(lib_fwd.steps_per_s, forward_flops, matmul),
    "peak_bytes": lib_grad.peak_bytes,
    "reference_peak_bytes": ref_grad.peak_bytes,
    "forward_peak_bytes": lib_fwd.peak_bytes,
    "reference_forward_peak_bytes": ref_fwd.peak_bytes,
    "peak_rss_bytes": benchmark_cases.peak_rss_bytes(),
    # The speedups compare the same computation only if these are float32 round-off.
    "max_abs_readout_diff": benchmark_cases.max_abs_diff(_readout(lib_fwd, rb), _readout(ref_fwd, rb)),
    # Meta-gradients of different batches differ: compared only when the reference ran the whole batch.
    "max_abs_meta_grad_diff": None
    if rb != case.batch
    else benchmark_cases.max_abs_diff(lib_grad.output, ref_grad.output),
    "note": "; ".join(notes) or None,
  }


def run_case(case: Case, settings: Settings, matmul: float) -> dict:
  """Library and reference forward and meta-gradient of one case; one JSON record."""
  s = make_setup(case, chunk_synapses=settings.chunk_synapses)
  logging.info("case %s: %d synapses, B=%d, T=%d", case.name, s.synapses, case.batch, case.steps)
  jobs = _case_jobs(case, s)
  compiled = benchmark_cases.compile_all(
    {label: job[:2] for label, job in jobs.items()}, settings.compile_threads
  )
  timed = {
    label: benchmark_cases.time_compiled(compiled[label], args, work, settings, label, case)
    for label, (_, args, work) in jobs.items()
  }
  if not case.forward_only:
    settings.meta_grads[(case, s.problem.remat)] = timed["library meta-gradient"]
  return _case_record(case, s, timed, matmul)


def run_remat_policies(case: Case, policies: Sequence[str], settings: Settings) -> list[dict]:
  """The library meta-gradient of `case` timed under each remat policy (reusing a case's program)."""
  logging.info("remat policies %s: %s, B=%d, T=%d", list(policies), case.name, case.batch, case.steps)
  todo = [remat for remat in policies if (case, remat) not in settings.meta_grads]
  setups = {remat: make_setup(case, remat, chunk_synapses=settings.chunk_synapses) for remat in todo}
  jobs = {
    f"meta-gradient, remat={remat}": (
      programs("library", s.problem)[1],
      (s.theta, s.topo, s.states, s.xs, s.targets),
    )
    for remat, s in setups.items()
  }
  compiled = benchmark_cases.compile_all(jobs, settings.compile_threads)
  for remat, s in setups.items():
    label = f"meta-gradient, remat={remat}"
    work = case.batch * s.synapses * case.steps
    settings.meta_grads[(case, remat)] = benchmark_cases.time_compiled(
      compiled[label], jobs[label][1], work, settings, label
    )
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
    s = make_setup(case, remat, chunk_synapses=settings.chunk_synapses)
    grad = programs("library", s.problem)[1]
    for t in steps:
      if (dataclasses.replace(case, steps=t), remat) not in settings.meta_grads:
        xs = jax.ShapeDtypeStruct((case.batch, t, case.num_neurons), jnp.float32)
        targets = jax.ShapeDtypeStruct((case.batch, t, case.n_out), jnp.float32)
        jobs[f"meta-gradient, remat={remat}, T={t}"] = (grad, (s.theta, s.topo, s.states, xs, targets))
  # Compiled, never run: LLVM's optimisation off halves the compile time and leaves XLA's buffer
  # assignment, hence the peak bytes, unchanged.
  compiled = benchmark_cases.compile_all(jobs, settings.compile_threads, MEMORY_ONLY_COMPILER_OPTIONS)
  records = []
  for remat in policies:
    for t in steps:
      label = f"meta-gradient, remat={remat}, T={t}"
      if label in compiled:
        peak = benchmark_cases.compiled_peak_bytes(compiled[label])
      else:
        peak = settings.meta_grads[(dataclasses.replace(case, steps=t), remat)].peak_bytes
      logging.info("  %s: peak %s", label, gib(peak))
      records.append({"N": case.num_neurons, "B": case.batch, "T": t, "remat": remat, "peak_bytes": peak})
  return records


def run_million(case: Case, settings: Settings) -> dict:
  """The target size once: library meta-gradient with the default remat policy, compiled and run once."""
  s = make_setup(case, chunk_synapses=settings.chunk_synapses)
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
  label = "million-synapse meta-gradient"
  compiled = benchmark_cases.compile_all({label: (programs("library", s.problem)[1], args)}, 1)[label]
  record["peak_bytes"] = benchmark_cases.compiled_peak_bytes(compiled)
  if record["peak_bytes"] is not None and record["peak_bytes"] > settings.max_run_bytes:
    record["note"] = f"not run: compiled peak exceeds max_run_gb ({gib(settings.max_run_bytes)})"
  else:
    try:
      start = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      record["seconds"] = time.perf_counter() - start
    except Exception as e:  # e.g. out of memory: recorded, not fatal
      record["note"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    else:
      record["ran"] = True
      record["meta_grad_synapse_steps_per_s"] = case.batch * s.synapses * case.steps / record["seconds"]
  record["peak_rss_bytes"] = benchmark_cases.peak_rss_bytes()
  logging.info("million-synapse case: peak %s, ran %s", gib(record["peak_bytes"]), record["ran"])
  return record


# ----------------------------------------------------------------------------------------------------
# The driver.


@dataclasses.dataclass(frozen=True)
class Options:
  """What `run` runs, checked when made (a ValueError names what is wrong, before anything compiles).

  `cases` and `remat_policies` empty mean all of the plan's and of `unroll.REMAT_POLICIES`; a None
  number means its default: the plan's repeats, the CPU count, `rules.RuleSpec.chunk_synapses` (0:
  whole blocks) and 60% of RAM.
  """

  plan: str = "full"  # a name of PLANS
  cases: tuple[str, ...] = ()
  sections: tuple[str, ...] = SECTIONS
  remat_policies: tuple[str, ...] = ()
  repeats: int | None = None
  compile_threads: int | None = None
  chunk_synapses: int | None = None
  max_run_bytes: int | None = None  # programs whose compiled peak exceeds this are compiled, not run

  def __post_init__(self):
    if self.plan not in PLANS:
      raise ValueError(f"unknown plan {self.plan!r}; one of {list(PLANS)}")
    checks = (
      ("case", self.cases, [c.name for c in PLANS[self.plan].cases]),
      ("section", self.sections, list(SECTIONS)),
      ("remat policy", self.remat_policies, list(unroll.REMAT_POLICIES)),
    )
    for what, names, allowed in checks:
      unknown = [n for n in names if n not in allowed]
      if unknown:
        raise ValueError(f"unknown {what} {unknown}; one of {allowed}")
    for name, minimum in (
      ("repeats", 1),
      ("compile_threads", 1),
      ("chunk_synapses", 0),
      ("max_run_bytes", 0),
    ):
      value = getattr(self, name)
      if value is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")

  def selected_cases(self) -> tuple[Case | HostCase, ...]:
    known = {c.name: c for c in PLANS[self.plan].cases}
    return tuple(known[n] for n in self.cases) if self.cases else PLANS[self.plan].cases

  def policies(self) -> tuple[str, ...]:
    return self.remat_policies or tuple(unroll.REMAT_POLICIES)

  def settings(self) -> Settings:
    """The settings of its programs' compilation and timing, defaults filled in."""
    return Settings(
      repeats=PLANS[self.plan].repeats if self.repeats is None else self.repeats,
      max_run_bytes=benchmark_cases.default_max_run_bytes()
      if self.max_run_bytes is None
      else self.max_run_bytes,
      compile_threads=self.compile_threads or os.cpu_count() or 1,
      chunk_synapses=self.chunk_synapses,
    )


def _header(plan: str, settings: Settings, matmul: float) -> dict:
  """The results dict before any section: the machine, the settings and the conventions."""
  chunk = rules.RuleSpec.chunk_synapses if settings.chunk_synapses is None else settings.chunk_synapses
  return {
    "mode": plan,
    "device": jax.devices()[0].device_kind,
    "jax_version": jax.__version__,
    "chunk_synapses": chunk,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "cpu_count": os.cpu_count(),
    "compile_threads": settings.compile_threads,
    "matmul_n": PLANS[plan].matmul_n,
    "matmul_flops_per_s": matmul,
    "flops_per_synapse_step": benchmark_cases.flops_per_synapse_step(rules.RuleSpec()),
    "flops_convention": benchmark_cases.FLOPS_CONVENTION,
    "timing": f"best of {settings.repeats} calls after compilation and one warm-up call",
    "default_remat": unroll.DEFAULT_REMAT,
    "memory_vs_T_compiler_options": MEMORY_ONLY_COMPILER_OPTIONS,
    "cases": [],
    "remat_policies": [],
    "memory_vs_T": [],
    "million_synapse_case": None,
  }


def run(options: Options = Options(), out: str | None = None) -> dict:
  """Runs the sections of `options` and returns the results dict, also written to `out` as JSON if
  given."""
  start = time.perf_counter()
  sizes, sections, policies = PLANS[options.plan], options.sections, options.policies()
  settings = options.settings()
  matmul = benchmark_cases.matmul_flops_per_s(sizes.matmul_n)
  logging.info("matmul roofline: %.1f GFLOP/s (n=%d)", matmul / 1e9, sizes.matmul_n)
  results = _header(options.plan, settings, matmul)
  if "cases" in sections:
    results["cases"] = [
      benchmark_host.run_host_case(case, settings, matmul)
      if isinstance(case, HostCase)
      else run_case(case, settings, matmul)
      for case in options.selected_cases()
    ]
  if "remat" in sections:
    results["remat_policies"] = run_remat_policies(sizes.remat_case, policies, settings)
  if "memory" in sections:
    results["memory_vs_T"] = run_memory_vs_steps(sizes.memory_case, sizes.memory_steps, policies, settings)
  if "million" in sections and sizes.million_case is not None:
    results["million_synapse_case"] = run_million(sizes.million_case, settings)
  results["wall_seconds"] = time.perf_counter() - start
  if out:
    files.write_json(out, results, indent=2)
  return results


# ----------------------------------------------------------------------------------------------------
# Tables.


def _m(value: float | None) -> str:
  return "-" if value is None else f"{value / 1e6:.2f}"


def _mb(value: int | None) -> str:
  return "-" if value is None else f"{value / 2**20:.1f}"


def _f(value: float | None, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def _cases_table(cases: list[dict]) -> list[str]:
  lines = [
    "throughput in M synapse-steps/s (a host case's grad: its training step), compiled peaks in MiB "
    "(of the meta-gradient; of the forward where there is none)",
    f"{'name':<13}{'topology':>9}{'N':>6}{'synapses':>10}{'B':>4}{'T':>5}{'fwd M/s':>9}{'ref fwd':>9}"
    f"{'grad M/s':>10}{'ref grad':>10}{'speedup':>9}{'roofline':>10}{'peak MB':>9}{'ref MB':>9}",
  ]
  for c in cases:
    peak = "forward_peak_bytes" if c.get("kind") == "forward" else "peak_bytes"  # the timed program's
    lines.append(
      f"{c['name']:<13}{c['topology']:>9}{c['N']:>6}{c['synapses']:>10}{c['B']:>4}{c['T']:>5}"
      f"{_m(c['forward_synapse_steps_per_s']):>9}{_m(c['reference_forward_synapse_steps_per_s']):>9}"
      f"{_m(c['meta_grad_synapse_steps_per_s']):>10}"
      f"{_m(c['reference_meta_grad_synapse_steps_per_s']):>10}{_f(c['speedup'], '.1f'):>9}"
      f"{_f(c['fraction_of_matmul_roofline'], '.3f'):>10}{_mb(c[peak]):>9}{_mb(c['reference_' + peak]):>9}"
    )
  return lines + [f"  {c['name']}: {c['note']}" for c in cases if c.get("note")]


def _remat_table(records: list[dict], default_remat: str) -> list[str]:
  first = records[0]
  lines = [f"remat policies ({first['name']}, B={first['B']}, T={first['T']}; default {default_remat})"]
  lines.append(f"{'remat':<10}{'grad M/s':>10}{'peak MB':>10}")
  for r in records:
    lines.append(f"{r['remat']:<10}{_m(r['meta_grad_synapse_steps_per_s']):>10}{_mb(r['peak_bytes']):>10}")
  return lines


def _memory_table(records: list[dict]) -> list[str]:
  steps = sorted({r["T"] for r in records})
  lines = [f"meta-gradient compiled peak MiB against T (full N={records[0]['N']}, B={records[0]['B']})"]
  lines.append(f"{'remat':<10}" + "".join(f"{'T=' + str(t):>10}" for t in steps))
  by_policy: dict[str, dict[int, int | None]] = {}
  for r in records:
    by_policy.setdefault(r["remat"], {})[r["T"]] = r["peak_bytes"]
  for remat, peaks in by_policy.items():
    lines.append(f"{remat:<10}" + "".join(f"{_mb(peaks.get(t)):>10}" for t in steps))
  return lines


def format_tables(results: dict) -> str:
  """The cases table (throughputs in M synapse-steps/s, peaks in MiB) and the two sweep tables."""
  lines = [
    f"device {results['device']}, jax {results['jax_version']}, matmul roofline "
    f"{results['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s (n={results['matmul_n']}), "
    f"F = {results['flops_per_synapse_step']} FLOPs per synapse-step",
  ]
  if results["cases"]:
    lines += ["", *_cases_table(results["cases"])]
  if results["remat_policies"]:
    lines += ["", *_remat_table(results["remat_policies"], results["default_remat"])]
  if results["memory_vs_T"]:
    lines += ["", *_memory_table(results["memory_vs_T"])]
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
