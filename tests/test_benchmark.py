"""Tests of the benchmark (`learned_rules.benchmarking`, `learned_rules.benchmark_cases`) at tiny sizes,
of the reference it times against (`learned_rules.reference`), and one run of its command.

No timing is asserted: the throughputs only have to be positive and finite. The reference (dense
synapses, unsplit first layer, no remat) must compute the library's readouts and meta-gradients, or the
speedups the benchmark reports would compare different computations.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from experiments import benchmark
from learned_rules import benchmark_cases, benchmarking, reference, rules, unroll
from learned_rules.configs import benchmark as benchmark_config
from learned_rules.configs import remember as remember_config

TINY = benchmark_cases.PLANS["tiny"]
CASE_KEYS = {
  "name",
  "kind",
  "topology",
  "N",
  "synapses",
  "B",
  "T",
  "forward_synapse_steps_per_s",
  "meta_grad_synapse_steps_per_s",
  "reference_forward_synapse_steps_per_s",
  "reference_meta_grad_synapse_steps_per_s",
  "speedup",
  "fraction_of_matmul_roofline",
  "peak_bytes",
  "reference_peak_bytes",
  "peak_rss_bytes",
  "max_abs_readout_diff",
  "max_abs_meta_grad_diff",
}
THROUGHPUTS = (
  "forward_synapse_steps_per_s",
  "meta_grad_synapse_steps_per_s",
  "reference_forward_synapse_steps_per_s",
  "reference_meta_grad_synapse_steps_per_s",
)


def _positive_finite(value) -> bool:
  return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
  """`benchmarking.run` of the tiny plan once, and the JSON it wrote (into a directory it has to
  create)."""
  out = tmp_path_factory.mktemp("benchmark") / "new_dir" / "benchmark.json"
  results = benchmarking.run(benchmarking.Options(plan="tiny"), out=str(out))
  with open(out) as f:
    return results, json.load(f)


def test_json_has_the_required_keys(tiny_results):
  results, written = tiny_results
  assert written == json.loads(json.dumps(results))
  for key in ("matmul_flops_per_s", "device", "jax_version", "flops_convention", "cases"):
    assert key in written, key
  assert _positive_finite(written["matmul_flops_per_s"])
  assert written["mode"] == "tiny" and written["chunk_synapses"] == rules.RuleSpec.chunk_synapses
  assert [c["name"] for c in written["cases"]] == [c.name for c in TINY.cases]
  for case in written["cases"]:
    assert CASE_KEYS <= set(case), CASE_KEYS - set(case)


# What each kind of case times: a network case its forward and meta-gradient, a forward-only case (an
# evaluation) its forward, a host case its training step (recorded in the meta-gradient's fields).
TIMED = {
  "network": (*THROUGHPUTS, "speedup", "fraction_of_matmul_roofline", "forward_fraction_of_matmul_roofline"),
  "forward": THROUGHPUTS[::2] + ("forward_speedup", "forward_fraction_of_matmul_roofline"),
  "host": THROUGHPUTS[1::2] + ("speedup", "fraction_of_matmul_roofline", "step_seconds"),
}


def test_throughputs_and_peaks_are_positive_and_finite(tiny_results):
  _, written = tiny_results
  assert {case["kind"] for case in written["cases"]} == set(TIMED)
  for case in written["cases"]:
    for key in (*TIMED[case["kind"]], "peak_rss_bytes"):
      assert _positive_finite(case[key]), (case["name"], key, case[key])
    untimed = set(THROUGHPUTS) - set(TIMED[case["kind"]])
    assert all(case[key] is None for key in untimed), case
    peaks = ("forward_peak_bytes", "reference_forward_peak_bytes")
    peaks += () if case["kind"] == "forward" else ("peak_bytes", "reference_peak_bytes")
    for key in peaks if case["peak_bytes"] is not None or case["kind"] == "forward" else ():
      assert case[key] is None or case[key] > 0, (case["name"], key)


def test_remat_and_memory_sections_cover_every_policy(tiny_results):
  _, written = tiny_results
  policies = tuple(unroll.REMAT_POLICIES)
  assert tuple(r["remat"] for r in written["remat_policies"]) == policies
  for record in written["remat_policies"]:
    assert _positive_finite(record["meta_grad_synapse_steps_per_s"]), record
  steps = TINY.memory_steps
  assert {(r["remat"], r["T"]) for r in written["memory_vs_T"]} == {(p, t) for p in policies for t in steps}
  for record in written["memory_vs_T"]:
    assert set(record) >= {"N", "B", "T", "remat", "peak_bytes"}


def test_benchmarked_forwards_and_meta_gradients_agree(tiny_results):
  """Each case's library and reference programs, run on the same states and inputs, agree."""
  _, written = tiny_results
  checked = {"readout": 0, "meta_grad": 0}
  for case in written["cases"]:
    if case["kind"] != "host":  # a host case has no readouts of its own: its loss and gradients
      assert case["max_abs_readout_diff"] < 1e-5, case
      checked["readout"] += 1
    if case["kind"] != "forward" and case["name"] != "layered-16":  # layered-16: a reference batch of 1
      assert case["max_abs_meta_grad_diff"] < 1e-5, case
      checked["meta_grad"] += 1
    if case["kind"] == "host":
      assert case["max_abs_loss_diff"] < 1e-5, case
  assert checked == {"readout": 3, "meta_grad": 2}
  (layered,) = [case for case in written["cases"] if case["name"] == "layered-16"]
  assert layered["max_abs_meta_grad_diff"] is None and "first 1 networks" in layered["note"]


def test_tables_show_every_case_and_policy(tiny_results):
  text = benchmarking.format_tables(tiny_results[0])
  for name in [c.name for c in TINY.cases] + list(unroll.REMAT_POLICIES):
    assert name in text


def test_million_case_runs_or_says_why_not(tiny_results):
  """`run_million` at a tiny size (the program the run above compiled): it runs, or with no memory
  to spare it is compiled only and the record says so."""
  settings = benchmark_cases.Settings(repeats=1, max_run_bytes=1 << 40, compile_threads=1)
  record = benchmarking.run_million(TINY.remat_case, settings)
  assert record["ran"] and _positive_finite(record["meta_grad_synapse_steps_per_s"]), record
  record = benchmarking.run_million(TINY.remat_case, dataclasses.replace(settings, max_run_bytes=0))
  assert not record["ran"] and record["seconds"] is None and "not run" in record["note"], record


def test_programs_over_the_memory_limit_are_not_run():
  x = np.ones((4,), np.float32)
  compiled = jax.jit(lambda x: x + 1).lower(x).compile()
  settings = benchmark_cases.Settings(repeats=1, max_run_bytes=0, compile_threads=1)
  timed = benchmark_cases.time_compiled(compiled, (x,), 4.0, settings, "tiny")
  if timed.peak_bytes is not None:  # without a memory analysis there is nothing to compare
    assert timed.steps_per_s is None and "not run" in timed.note


def _perturbed(theta: rules.Theta, scale: float = 0.3, seed: int = 0) -> rules.Theta:
  """`theta` plus noise on every leaf, so no bias, initial state or embedding is zero (zeros would
  hide a term added twice or to the wrong axis)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda leaf: np.asarray(leaf) + scale * rng.standard_normal(leaf.shape, np.float32), theta
  )


@pytest.mark.parametrize("case", TINY.cases[:2], ids=lambda case: case.topology)
def test_reference_unroll_matches_library(case):
  """Same theta, initial states and inputs: same readouts, bodies and synapses after the unroll.

  Uses the benchmark's own programs at the tiny plan's sizes, so the persistent compilation cache
  shares them with the in-process run above.
  """
  topo = case.make_topology()
  theta = _perturbed(benchmark_cases.default_theta(topo.num_types))
  s = benchmark_cases.make_setup(case, theta=theta)
  args = (s.theta, s.topo, s.states, s.xs)
  final, readout = benchmark_cases.programs("library", s.problem)[0](*args)
  ref_states = benchmark_cases.dense_states(s.topo, s.states)
  ref_forward = benchmark_cases.programs("reference", s.problem)[0]
  ref_final, ref_readout = ref_forward(s.theta, s.topo, ref_states, s.xs)
  assert isinstance(ref_final, reference.DenseState)
  assert readout.shape == (case.batch, case.steps, case.n_out)
  np.testing.assert_allclose(np.asarray(ref_readout), np.asarray(readout), atol=1e-4)
  np.testing.assert_allclose(np.asarray(ref_final.bodies), np.asarray(final.bodies), atol=1e-4)
  np.testing.assert_allclose(
    np.asarray(ref_final.synapses),
    np.asarray(benchmark_cases.dense_states(s.topo, final).synapses),
    atol=1e-4,
  )
  # The dense form really is dense: every pair, with zeros where the mask has no synapse.
  assert ref_states.synapses.shape == (
    case.batch,
    case.num_neurons,
    case.num_neurons,
    s.problem.rule.synapse_dim,
  )
  absent = np.asarray(s.topo.mask) == 0
  assert np.all(np.asarray(ref_states.synapses)[:, absent] == 0)


def test_flops_per_synapse_step_counts_the_straightforward_form():
  spec = rules.RuleSpec(synapse_dim=4, act_dim=4, emb_dim=8, hidden=32)
  first, bilinear, second = 2 * 28 * 32, 2 * 32 * 16 + 2 * 32 * 4, 2 * 32 * 4
  assert benchmark_cases.flops_per_synapse_step(spec) == first + bilinear + second == 3328
  no_bilinear = rules.RuleSpec(synapse_dim=4, act_dim=4, emb_dim=8, hidden=32, bilinear=False)
  assert benchmark_cases.flops_per_synapse_step(no_bilinear) == first + second


@pytest.mark.parametrize("plan", ["full", "quick"])
def test_the_plans_time_the_shapes_where_the_work_is(plan):
  """train-64 is the default run's meta step, train-128 K = 32 on 128 neurons, host-64 a host's step
  on 32 sequences of 8 pairs around the shipped rule, eval-1024 one episode of K = 192 on 1024 neurons."""
  cases = {c.name: c for c in benchmark_cases.PLANS[plan].cases}
  remember = remember_config.get_config()
  default_t = benchmark_cases.episode_steps(remember.task.num_snippets)
  assert default_t == 34 and remember.train.batch_size == 16
  shape = lambda name: (cases[name].num_neurons, cases[name].batch, cases[name].steps)  # noqa: E731
  assert shape("train-64") == (64, 16, 34)
  assert shape("train-128") == (128, 16, 130)
  assert shape("eval-1024") == (1024, 1, benchmark_cases.episode_steps(192))
  assert cases["eval-1024"].forward_only
  host = cases["host-64"]
  assert (host.batch, host.pairs, host.rule) == (32, 8, "hetero")


def test_layered_case_has_about_the_synapses_of_full_256():
  plan = {c.name: c for c in benchmark_cases.PLANS["full"].cases}
  full = plan["full-256"].make_topology().num_synapses
  layered = plan["layered-256"].make_topology().num_synapses
  assert full == 256 * 255 and abs(layered - full) / full < 0.1


def test_the_chunk_size_is_a_field_of_the_problems_rule_spec():
  """The benchmark's chunk size reaches the traced programs through the problem, no module global."""
  topo = TINY.cases[0].make_topology()
  assert benchmark_cases.make_problem(topo).rule.chunk_synapses == rules.RuleSpec.chunk_synapses
  assert benchmark_cases.make_problem(topo, chunk_synapses=8).rule.chunk_synapses == 8
  assert benchmark_cases.make_problem(topo, "nested", 0).rule == dataclasses.replace(
    benchmark_cases.make_problem(topo).rule, chunk_synapses=0
  )


@pytest.mark.parametrize(
  "fields,message",
  [
    ({"cases": ("full-99",)}, "unknown case"),
    ({"sections": ("cases", "speed")}, "unknown section"),
    ({"remat_policies": ("sometimes",)}, "unknown remat policy"),
    ({"plan": "huge"}, "unknown plan"),
    ({"chunk_synapses": -1}, "chunk_synapses must be >= 0"),
    ({"repeats": 0}, "repeats must be >= 1"),
  ],
)
def test_unknown_names_and_bad_numbers_are_refused_before_anything_runs(fields, message):
  with pytest.raises(ValueError, match=message):
    benchmarking.Options(**{"plan": "tiny", **fields})


@pytest.mark.parametrize("variant,plan", [("", "full"), ("quick", "quick"), ("tiny", "tiny")])
def test_every_config_variant_gives_valid_options(variant, plan):
  options = benchmark.options_of(benchmark_config.get_config(variant))
  assert options.plan == plan and options.sections == benchmarking.SECTIONS
  assert options.selected_cases() == benchmark_cases.PLANS[plan].cases
  assert options.policies() == tuple(unroll.REMAT_POLICIES)


@pytest.mark.slow  # a subprocess end to end: CI runs it with the slow tests
def test_command_runs_one_tiny_case_with_chunks(run_module, tmp_path):
  """`python -m experiments.benchmark` end to end: config, overrides, the JSON in the workdir and the
  table; chunks of 8 synapses (the full-16 block in 16 chunks) still compute the reference's numbers."""
  proc = run_module(
    "experiments.benchmark",
    "--config=learned_rules/configs/benchmark.py:tiny",
    "--config.sections=cases",
    "--config.cases=full-16",
    "--config.chunk_synapses=8",
    f"--workdir={tmp_path}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "benchmark.json") as f:
    written = json.load(f)
  assert written["mode"] == "tiny" and written["chunk_synapses"] == 8
  assert [c["name"] for c in written["cases"]] == ["full-16"] and not written["remat_policies"]
  (case,) = written["cases"]
  assert case["max_abs_readout_diff"] < 1e-5 and case["max_abs_meta_grad_diff"] < 1e-5, case
  assert "full-16" in proc.stdout and "benchmark.json" in proc.stdout


def test_command_refuses_an_unknown_case_with_exit_2(run_module, tmp_path):
  proc = run_module("experiments.benchmark", "--config.cases=full-99", f"--workdir={tmp_path}")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: --config: unknown case")
  assert not list(tmp_path.iterdir())
