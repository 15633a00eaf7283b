"""The benchmark's host case (`benchmark_cases.HostCase`): one training step of a host model that keeps
token pairs in a frozen `PlasticMemory`, against the same host with the reference synapse form.

The host is the token-recall study's plastic host (`host_models.PlasticHost`): learned token codes, the
memory (write the sequence's pairs, read its query) and a linear decoder. One step is the host's
cross-entropy loss and its gradient in the host's parameters through the memory's unrolls (the rule
is frozen: no gradient reaches it), then an Adam update. The reference host differs only in its
memory's rule spec: `fast_synapse=False`, the per-synapse update vmapped over every pair, and no
rematerialisation (`remat="none"`). Both compute the same loss and gradients; the record has the largest
difference of their gradients.

Throughput is in synapse-steps per second like every case: `B x synapses x steps / seconds`, where a
sequence of L pairs runs `L x present_steps + delay_steps + query_steps` network steps.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from learned_rules import benchmark_cases, host_models, network, pretrained, rules, supervised, token_task
from learned_rules.benchmark_cases import HostCase, Settings
from learned_rules.memory import PlasticMemory

# The host's optimizer: Adam after global-norm clipping, as the token-recall study trains it.
OPTIMIZER = supervised.make_optimizer(1e-3, clip_norm=1.0)


def library_memory(case: HostCase) -> PlasticMemory:
  """The case's frozen memory: the shipped rule's (`load_rule`), or a random rule on its own network."""
  if case.rule:
    return PlasticMemory.from_rule(pretrained.load_rule(case.rule))
  topo = network.make_full(case.n_in, case.n_out, case.n_hidden)
  return PlasticMemory(topology=topo, spec=rules.RuleSpec(num_types=topo.num_types))


def reference_memory(memory: PlasticMemory) -> PlasticMemory:
  """The same memory with the straightforward synapse form and no rematerialisation."""
  return memory.clone(spec=dataclasses.replace(memory.spec, fast_synapse=False), remat="none")


def host_for(case: HostCase, memory: PlasticMemory) -> host_models.PlasticHost:
  topo = memory.topology
  codes = host_models.TokenCodes(case.num_tokens, case.num_tokens, topo.n_in, topo.n_out)
  return host_models.PlasticHost(memory, codes, case.num_tokens)


def train_step(module: host_models.PlasticHost):
  """Jitted `step(params, opt_state, others, batch) -> (params, opt_state, loss, grads)`: the host's
  cross-entropy, its gradient in `params`, and one Adam step (nothing donated, so it can be timed
  again on the same arguments)."""
  logits_fn = host_models.logits_fn(module)

  def loss_fn(params, others, batch):
    logits = logits_fn({**others, "params": params}, batch)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch.target).mean()

  def step(params, opt_state, others, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, others, batch)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads

  return jax.jit(step)


def steps_per_sequence(memory: PlasticMemory, pairs: int) -> int:
  """Network steps of one sequence: write `pairs` pairs, then read one query."""
  return pairs * memory.present_steps + memory.delay_steps + memory.query_steps


def run_host_case(case: HostCase, settings: Settings, matmul: float) -> dict:
  """The library host's and the reference host's training step; one JSON record, with the fields of a
  network case (its forward fields null)."""
  memory = library_memory(case)
  hosts = {"library": host_for(case, memory)}
  if case.reference:
    hosts["reference"] = host_for(case, reference_memory(memory))
  variables = host_models.init_host(hosts["library"], 0)
  params = variables["params"]
  others = {k: v for k, v in variables.items() if k != "params"}
  opt_state = OPTIMIZER.init(params)
  seqs = token_task.sample_sequences(
    np.random.default_rng(0), case.batch, case.pairs, case.num_tokens, case.num_tokens
  )
  batch = host_models.to_batch(hosts["library"], seqs, case.pairs)
  synapses = memory.topology.num_synapses
  steps = steps_per_sequence(memory, case.pairs)
  work = case.batch * synapses * steps
  logging.info("case %s: %d synapses, B=%d, L=%d, T=%d", case.name, synapses, case.batch, case.pairs, steps)
  args = (params, opt_state, others, batch)
  jobs = {f"{impl} host step": (train_step(module), args) for impl, module in hosts.items()}
  compiled = benchmark_cases.compile_all(jobs, settings.compile_threads)
  timed = {
    label: benchmark_cases.time_compiled(compiled[label], args, work, settings, label, case) for label in jobs
  }
  none = benchmark_cases.Timed(None, None)
  lib, ref = timed["library host step"], timed.get("reference host step", none)
  grads = lambda t: None if t.output is None else t.output[3]  # noqa: E731
  flops = 3 * benchmark_cases.flops_per_synapse_step(memory.spec)
  notes = [f"{label}: {t.note}" for label, t in timed.items() if t.note]
  return {
    "name": case.name,
    "kind": "host",
    "topology": "full",
    "N": memory.topology.num_neurons,
    "synapses": synapses,
    "B": case.batch,
    "T": steps,
    "remat": memory.remat,
    "rule": case.rule or "random",
    "forward_synapse_steps_per_s": None,
    "meta_grad_synapse_steps_per_s": lib.steps_per_s,
    "reference_forward_synapse_steps_per_s": None,
    "reference_meta_grad_synapse_steps_per_s": ref.steps_per_s,
    "speedup": benchmark_cases.ratio(lib.steps_per_s, ref.steps_per_s),
    "forward_speedup": None,
    "fraction_of_matmul_roofline": benchmark_cases.roofline(lib.steps_per_s, flops, matmul),
    "forward_fraction_of_matmul_roofline": None,
    "reference_fraction_of_matmul_roofline": benchmark_cases.roofline(ref.steps_per_s, flops, matmul),
    "step_seconds": None if lib.steps_per_s is None else work / lib.steps_per_s,
    "reference_step_seconds": None if ref.steps_per_s is None else work / ref.steps_per_s,
    "peak_bytes": lib.peak_bytes,
    "reference_peak_bytes": ref.peak_bytes,
    "forward_peak_bytes": None,
    "reference_forward_peak_bytes": None,
    "peak_rss_bytes": benchmark_cases.peak_rss_bytes(),
    "max_abs_readout_diff": None,
    "max_abs_meta_grad_diff": benchmark_cases.max_abs_diff(grads(lib), grads(ref)),
    "max_abs_loss_diff": None
    if ref.output is None or lib.output is None
    else float(jnp.abs(lib.output[2] - ref.output[2])),
    "note": "; ".join(notes) or None,
  }
