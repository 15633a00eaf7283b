"""The token-recall study: a meta-trained rule as the memory of another model, against LSTMs.

`run_study` trains every host model of `host_models` on the same batches of `token_task` sequences
(Adam on cross-entropy, `supervised`) and measures each one's held-out accuracy (argmax value token =
target) at every L of the task's `eval_lengths`:

- `plastic`: a frozen `PlasticMemory` of the study's rule (`load_memory`); the run checks that training
  leaves the rule unchanged.
- `lstm<H>`: an LSTM host of H units; H = 0 in `lstm_hidden_sizes` is the smallest with at least as many
  parameters as the plastic host and its rule together. `lstm<H>x<m>` is the same host trained for m
  times the steps (`lstm_step_multiples`), on the same stream of batches continued: an LSTM step costs a
  small fraction of a plastic-memory step.

Every training batch has one L (one compiled plastic step per L; an LSTM host pads to the longest L). The
results are a JSON-ready dict; `format_table` and `plot` show them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from learned_rules import config as config_lib
from learned_rules import figures, host_models, pretrained, rules, supervised, token_task
from learned_rules.configs import remember as remember_configs
from learned_rules.memory import PlasticMemory

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Study:
  """Everything a token-recall study runs (`learned_rules/configs/token_recall.py` documents each field).

  Attributes:
    seed: of the data streams and every host's initialisation (and of a random rule).
    rule: the memory's rule, a name or path `load_rule` reads, or "random".
    random_rule: the `remember.py` variant whose network and rule sizes a random rule takes.
    task: the vocabularies and lengths.
    code, code_scale, embed_init_std: every host's token codes (`host_models.TokenCodes`).
    lstm_hidden_sizes, lstm_step_multiples: the LSTM hosts (0: matched to the plastic host) and their
      budgets in multiples of `num_steps` (1 among them).
    num_steps, batch_size, learning_rate, clip_norm, log_every: every host's training.
    eval_sequences, eval_batch_size: held-out sequences per L, and per compiled evaluation step.
  """

  seed: int
  rule: str
  random_rule: str
  task: token_task.TokenTask
  code: str
  code_scale: float
  embed_init_std: float
  lstm_hidden_sizes: tuple[int, ...]
  lstm_step_multiples: tuple[int, ...]
  num_steps: int
  batch_size: int
  learning_rate: float
  clip_norm: float
  log_every: int
  eval_sequences: int
  eval_batch_size: int


class Host(NamedTuple):
  """A host model to train: its module, initial variables and a JSON-ready description."""

  module: nn.Module
  variables: dict
  info: dict


def load_memory(rule: str, random_rule: str, seed: int) -> tuple[PlasticMemory, dict]:
  """The frozen memory of `rule` (or of a fresh random rule from `seed`), and a JSON-ready description.

  Raises `ConfigError` ("rule") when there is no such rule or it cannot be loaded."""
  if rule == "random":
    rcfg = remember_configs.get_config(random_rule)
    topo = config_lib.make_topology(rcfg)
    theta = rules.init_theta(jax.random.PRNGKey(seed), config_lib.rule_spec(rcfg, topo))
    loaded = pretrained.Rule(theta=theta, config=rcfg, meta_steps=0, source=f"random ({random_rule})")
  else:
    try:
      loaded = pretrained.load_rule(rule)
    except (FileNotFoundError, pretrained.RuleLoadError) as e:
      raise config_lib.ConfigError("rule", str(e)) from None
  task = loaded.experiment.task
  info = {
    "name": rule,
    "source": loaded.source,
    "meta_steps": loaded.meta_steps,
    "params": supervised.param_count(loaded.theta),
    "neurons": loaded.topology.num_neurons,
    "key_width": loaded.topology.n_in,
    "value_width": loaded.topology.n_out,
    "meta_trained_on": f"{task.protocol}, K = {task.num_snippets} snippets",
  }
  return PlasticMemory.from_rule(loaded), info


def make_hosts(study: Study, memory: PlasticMemory, rule_params: int) -> dict[str, Host]:
  """The plastic host, then every LSTM host at every step multiple, by name (`plastic`, `lstm<H>x<m>`)."""
  task = study.task
  widths = memory.topology.n_in, memory.topology.n_out
  codes = host_models.TokenCodes(
    task.num_keys, task.num_values, *widths, study.code, study.code_scale, study.embed_init_std
  )
  plastic = host_models.PlasticHost(memory, codes, task.num_values)
  variables = host_models.init_host(plastic, study.seed)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables["params"])]
  if set(variables) != {"params", "rule", "memory"} or any("theta" in p for p in paths):
    raise RuntimeError(f"the plastic host's rule is not frozen: variables {sorted(variables)}")
  host_params = supervised.param_count(variables["params"])
  info = {"params": host_params, "rule_params": rule_params, "step_multiple": 1}
  hosts = {"plastic": Host(plastic, variables, info)}
  for h in study.lstm_hidden_sizes:
    hidden = h or host_models.lstm_hidden_for(host_params + rule_params, codes, task.num_values)
    module = host_models.LSTMHost(hidden, codes, task.num_values)
    variables = host_models.init_host(module, study.seed)
    for m in sorted(study.lstm_step_multiples):
      info = {"params": supervised.param_count(variables["params"]), "rule_params": 0}
      info.update(hidden=hidden, matched=h == 0, step_multiple=m)
      hosts.setdefault(f"lstm{hidden}" + (f"x{m}" if m > 1 else ""), Host(module, variables, info))
  return hosts


def _host_train_step(module: nn.Module, clip_norm: float):
  """`supervised.make_train_step` on the cross-entropy of `module`'s logits; its data is `(others,
  batch)`: the variables that are not trained (a plastic host's rule and empty memory), and a `Batch`."""
  logits_fn = host_models.logits_fn(module)

  def loss_fn(params, data):
    others, batch = data
    logits = logits_fn({**others, "params": params}, batch)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch.target).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == batch.target)

  return supervised.make_train_step(loss_fn, clip_norm)


def train_host(
  name: str, module: nn.Module, variables: dict, study: Study, log: Log = print, step_multiple: int = 1
) -> tuple[dict, dict]:
  """Trains `variables["params"]` for `step_multiple` x `num_steps` steps on the study's training stream
  (the same batches for every host, in the same order). Returns the trained variables and a JSON-ready
  record; logs the mean loss and accuracy every `step_multiple` x `log_every` steps, with the time left
  at the steps per second so far."""
  num_steps, log_every = step_multiple * study.num_steps, step_multiple * study.log_every
  train_step = _host_train_step(module, study.clip_norm)
  params = jax.tree.map(jnp.copy, variables["params"])  # the step donates them; `variables` stays valid
  others = {k: v for k, v in variables.items() if k != "params"}
  opt_state = supervised.make_optimizer(study.learning_rate, study.clip_norm).init(params)
  rate = jnp.asarray(study.learning_rate, jnp.float32)
  lo, hi = study.task.train_lengths
  batches = token_task.training_batches(
    token_task.sequence_rng(study.seed, token_task.TRAIN_TAG), study.task, study.batch_size
  )
  start = time.perf_counter()
  window, history = [], []
  for step in range(1, num_steps + 1):
    batch = host_models.to_batch(module, next(batches), hi)
    params, opt_state, loss, accuracy = train_step(params, opt_state, rate, (others, batch))
    window.append((float(loss), float(accuracy)))
    if step % log_every == 0 or step == num_steps:
      loss_mean, acc_mean = (float(np.mean(x)) for x in zip(*window, strict=True))
      history.append({"step": step, "loss": loss_mean, "accuracy": acc_mean})
      rate = step / (time.perf_counter() - start)  # compilation included: the first lines overestimate
      left = f", {rate:.1f} steps/s, about {(num_steps - step) / rate:.0f} s left" if step < num_steps else ""
      log(
        f"{name}: step {step}/{num_steps}: loss {loss_mean:.3f}, train accuracy {acc_mean:.3f} "
        f"(mean of the last {len(window)} steps, L in {lo}..{hi}){left}"
      )
      window = []
  seconds = time.perf_counter() - start
  record = {
    "num_steps": num_steps,
    "batch_size": study.batch_size,
    "train_seconds": seconds,
    "history": history,
  }
  return {**others, "params": params}, record


def evaluate_host(module: nn.Module, variables: dict, study: Study) -> dict[str, float]:
  """Accuracy at every L of the task's `eval_lengths` on the held-out sequences (the same for every host),
  by L as a string."""
  logits_fn = host_models.logits_fn(module)
  correct = jax.jit(lambda variables, b: jnp.sum(jnp.argmax(logits_fn(variables, b), -1) == b.target))
  slots, out = max(study.task.eval_lengths), {}
  for length in study.task.eval_lengths:
    sequences = token_task.held_out_sequences(
      study.seed, study.task, length, study.eval_sequences, study.eval_batch_size
    )
    hits = sum(int(correct(variables, host_models.to_batch(module, s, slots))) for s in sequences)
    out[str(length)] = hits / study.eval_sequences
  return out


def trees_equal(a, b) -> bool:
  """Whether two trees hold the same arrays, bit for bit."""
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(leaves_a) == len(leaves_b) and all(
    np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b, strict=True)
  )


def run_study(study: Study, log: Log = print) -> dict:
  """Trains and evaluates every host of `make_hosts`; returns the JSON-ready results: the rule, chance,
  the task, every host's description, training record and accuracy by L, the machine and wall time.

  Loads the rule first, so that a bad `rule` is a `ConfigError` before anything is compiled."""
  start = time.perf_counter()
  memory, rule_info = load_memory(study.rule, study.random_rule, study.seed)
  log(
    f"rule {rule_info['name']}: {rule_info['params']} meta-parameters, {rule_info['neurons']} neurons, "
    f"meta-trained on {rule_info['meta_trained_on']} ({rule_info['meta_steps']} meta steps)"
  )
  hosts = make_hosts(study, memory, rule_info["params"])
  for name, host in hosts.items():
    if host.info["step_multiple"] == 1:
      rule = host.info["rule_params"]
      log(
        f"{name}: {host.info['params']} trained parameters"
        + (f" + {rule} frozen rule meta-parameters" if rule else "")
      )
  results = {}
  for name, (module, variables, info) in hosts.items():
    trained, record = train_host(name, module, variables, study, log, info["step_multiple"])
    if name == "plastic":
      record["rule_unchanged"] = trees_equal(variables["rule"], trained["rule"])
      if not record["rule_unchanged"]:
        raise RuntimeError("training changed the frozen rule")
    t0 = time.perf_counter()
    accuracy = evaluate_host(module, trained, study)
    record.update(eval_seconds=time.perf_counter() - t0, accuracy=accuracy)
    results[name] = {**info, **record}
    log(f"{name}: trained in {record['train_seconds']:.0f} s; accuracy by L {_short(accuracy)}")
  return {
    "rule": rule_info,
    "task": dataclasses.asdict(study.task),
    "chance": 1.0 / study.task.num_values,
    "eval_lengths": list(study.task.eval_lengths),
    "hosts": results,
    "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, "
    f"{jax.default_backend()}",
    "wall_seconds": time.perf_counter() - start,
  }


def _short(accuracy: dict[str, float]) -> str:
  return ", ".join(f"{k}: {v:.3f}" for k, v in accuracy.items())


def host_label(name: str, host: dict) -> str:
  """`host`'s line of the table and the figure legend: its kind, size and budget."""
  if name == "plastic":
    return f"plastic memory ({host['params']:,} + {host['rule_params']:,} frozen)"
  matched = ", >= plastic" if host.get("matched") else ""
  steps = f", {host['step_multiple']}x the steps" if host["step_multiple"] > 1 else ""
  return f"LSTM, H = {host['hidden']} ({host['params']:,}{matched}){steps}"


def format_table(out: dict) -> str:
  """The held-out accuracy of every host of the results `out` against L, beside chance."""
  names = list(out["hosts"])
  lines = [
    "Held-out accuracy (argmax value token) against L; parameters trained (+ frozen):",
    *(f"  {n}: {host_label(n, out['hosts'][n])}" for n in names),
    f"{'L':>4}" + "".join(f"{n:>12}" for n in names) + f"{'chance':>10}",
  ]
  for length in out["eval_lengths"]:
    row = "".join(f"{out['hosts'][n]['accuracy'][str(length)]:>12.3f}" for n in names)
    lines.append(f"{length:>4}{row}{out['chance']:>10.3f}")
  return "\n".join(lines)


def plot(out: dict, path: str) -> None:
  """Accuracy against L for every host of the results `out`, the chance line, and the training range
  shaded; a small PNG (a 64-colour palette)."""
  fig, ax = plt.subplots(figsize=(8.0, 3.4), dpi=80)
  task, ls = out["task"], out["eval_lengths"]
  lo, hi = task["train_lengths"]
  ax.axvspan(lo - 0.3, hi + 0.3, color="0.92", lw=0, label=f"trained L ({lo} to {hi})")
  hidden = list(dict.fromkeys(h["hidden"] for h in out["hosts"].values() if "hidden" in h))
  for name, host in out["hosts"].items():
    if name == "plastic":
      style, color = "o-", "C0"
    else:
      style, color = "s--" if host["step_multiple"] == 1 else "^:", f"C{1 + hidden.index(host['hidden'])}"
    ax.plot(ls, [host["accuracy"][str(x)] for x in ls], style, color=color, label=host_label(name, host))
  ax.axhline(out["chance"], color="gray", lw=0.8, ls=":", label=f"chance (1/{round(1 / out['chance'])})")
  ax.set_ylim(-0.02, 1.02)
  ax.set_xticks(ls)
  ax.set_xlabel("L, (key, value) pairs in the sequence")
  ax.set_ylabel("held-out recall accuracy")
  title = f"associative recall over tokens ({task['num_keys']} keys, {task['num_values']} values)"
  ax.set_title(title, fontsize=9)
  legend = dict(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title_fontsize=7)
  ax.legend(title="parameters trained (+ frozen)", **legend)
  fig.tight_layout()
  figures.save_small_png(fig, path)
