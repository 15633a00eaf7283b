r"""A learned rule inside another model: associative recall over token sequences.

  python -m experiments.token_recall                                   # the shipped `hetero` rule
  python -m experiments.token_recall --quick --figure_dir=docs/figures/token_recall
  python -m experiments.token_recall --config=learned_rules/configs/token_recall.py:tiny --workdir=/tmp/tr

The task (`sample_sequences`): L (key token, value token) pairs, keys distinct within a sequence, then
one of the L keys as a query; the target is its value token. The rule was meta-trained on random +-1
patterns shown for two steps each, never on tokens. Two kinds of host, each the same learned token
encoders (`TokenCodes`: `nn.Embed` to the memory's key / value width, then tanh) and decoder (`nn.Dense`
to value logits), trained with Adam on cross-entropy for the same steps on the very same batches:

- `plastic` (`PlasticHost`): a frozen `PlasticMemory.from_rule(rule)` writes the L coded pairs and reads
  the coded query; the decoder reads the recalled code. Gradients reach the encoders through the memory;
  the rule sits in the `rule` collection, outside `params`, and the run checks it is unchanged.
- `lstm<H>` (`LSTMHost`): an LSTM reads the L codes `concat(key, value)`, then `concat(query, 0)`; the
  decoder reads its last hidden state. `lstm.hidden_sizes` 0 is the smallest H with at least as many
  parameters as the plastic host and its rule together. `lstm<H>x<m>` is the same LSTM host trained for
  m times the steps (`lstm.step_multiples`), on the same stream of batches continued: an LSTM step costs
  a small fraction of a plastic-memory step.

Every batch has one L, drawn uniformly from `task.train_lengths` (one compiled step per L; nothing is
padded). Accuracy (argmax value token = target) is measured on held-out sequences at each L of
`task.eval_lengths`. Writes `<workdir>/token_recall.json` (config, parameter counts, training wall times,
per-host per-L accuracy) and `<workdir>/accuracy_vs_length.png` (also into `--figure_dir` if given).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from learned_rules import (  # noqa: E402  # noqa: E402
  PlasticMemory,
  figures,
  flagutil,
  load_rule,
  meta_train,
  network,
  pretrained,
  rules,
  trained_baselines,
)
from learned_rules import config as config_lib  # noqa: E402
from learned_rules import metrics as metrics_lib  # noqa: E402
from learned_rules.config import ConfigError  # noqa: E402
from learned_rules.configs import remember as remember_configs  # noqa: E402
from learned_rules.configs import token_recall as token_recall_configs  # noqa: E402

_CONFIG = flagutil.define(
  config_flags.DEFINE_config_file, "config", "learned_rules/configs/token_recall.py", "Experiment config."
)
_WORKDIR = flagutil.define(
  flags.DEFINE_string, "workdir", "", "Output folder (default runs/token_recall[-quick])."
)
_QUICK = flagutil.define(
  flags.DEFINE_bool, "quick", False, "The config's `quick` variant on top (about 5 min)."
)
_FIGURE_DIR = flagutil.define(
  flags.DEFINE_string, "figure_dir", None, "Also write the PNG here (e.g. docs/figures/...)."
)

CODES = ("tanh", "sign")
FIGURE = "accuracy_vs_length.png"
_TRAIN_TAG, _EVAL_TAG = 0, 1  # data streams of the run's seed: training and held-out sequences are disjoint


# ----------------------------------------------------------------------------------------------------------
# Config.


def validate(cfg) -> None:
  """Raises `ConfigError` naming the first invalid field; checks nothing that needs the rule loaded."""
  config_lib._int(cfg, "seed", 0)
  rule = config_lib._get(cfg, "rule")
  if not isinstance(rule, str) or not rule:
    raise ConfigError("rule", f"must be a rule name or path, or 'random', got {rule!r}")
  if rule == "random":
    try:
      remember_configs.get_config(config_lib._get(cfg, "random_rule"))
    except (KeyError, TypeError, AttributeError):
      raise ConfigError(
        "random_rule", f"must be a variant of learned_rules/configs/remember.py, got {cfg.random_rule!r}"
      ) from None
  num_keys = config_lib._int(cfg, "task.num_keys", 2)
  config_lib._int(cfg, "task.num_values", 2)
  lengths = config_lib._int_sequence(cfg, "task.train_lengths", allow_empty=False)
  if len(lengths) != 2 or lengths[0] > lengths[1]:
    raise ConfigError("task.train_lengths", f"must be (min, max) with min <= max, got {tuple(lengths)}")
  for field, ls in (("task.train_lengths", lengths), ("task.eval_lengths", None)):
    ls = ls or config_lib._int_sequence(cfg, field, allow_empty=False)
    if max(ls) > num_keys:
      raise ConfigError(field, f"L = {max(ls)} exceeds the {num_keys} distinct keys (task.num_keys)")
  config_lib._choice(cfg, "host.code", CODES)
  config_lib._float(cfg, "host.code_scale", 0.0, math.inf, low_open=True)
  config_lib._float(cfg, "host.embed_init_std", 0.0, math.inf, low_open=True)
  hidden = config_lib._get(cfg, "lstm.hidden_sizes")
  if (
    isinstance(hidden, (str, bytes))
    or not hasattr(hidden, "__len__")
    or not hidden
    or any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in hidden)
  ):
    raise ConfigError("lstm.hidden_sizes", f"must be a non-empty sequence of integers >= 0, got {hidden!r}")
  multiples = config_lib._int_sequence(cfg, "lstm.step_multiples", allow_empty=False)
  if 1 not in multiples:
    raise ConfigError("lstm.step_multiples", f"must include 1 (the plastic host's budget), got {multiples}")
  config_lib._int(cfg, "train.num_steps", 1)
  config_lib._int(cfg, "train.batch_size", 1)
  config_lib._float(cfg, "train.learning_rate", 0.0, math.inf, low_open=True)
  config_lib._float(cfg, "train.clip_norm", 0.0, math.inf, low_open=True)
  config_lib._int(cfg, "train.log_every", 1)
  n = config_lib._int(cfg, "eval.num_sequences", 1)
  b = config_lib._int(cfg, "eval.batch_size", 1)
  if n % b:
    raise ConfigError("eval.num_sequences", f"must be a multiple of eval.batch_size ({b}), got {n}")


def load_memory(cfg) -> tuple[PlasticMemory, dict]:
  """The frozen memory of `cfg.rule`, and a JSON-ready description of the rule.

  Raises `ConfigError` ("rule") when there is no such rule or it cannot be loaded."""
  if cfg.rule == "random":
    rcfg = remember_configs.get_config(cfg.random_rule)
    topo = network.make_topology(rcfg.net)
    spec = config_lib.rule_spec(rcfg, topo)
    theta = rules.init_theta(jax.random.PRNGKey(cfg.seed), spec)
    rule = pretrained.Rule(theta=theta, config=rcfg, meta_steps=0, source=f"random ({cfg.random_rule})")
  else:
    try:
      rule = load_rule(cfg.rule)
    except (FileNotFoundError, pretrained.RuleLoadError) as e:
      raise ConfigError("rule", str(e)) from None
  info = {
    "name": cfg.rule,
    "source": rule.source,
    "meta_steps": rule.meta_steps,
    "params": trained_baselines.param_count(rule.theta),
    "neurons": rule.topology.num_neurons,
    "key_width": rule.topology.n_in,
    "value_width": rule.topology.n_out,
    "meta_trained_on": f"{rule.config.task.protocol}, K = {rule.config.task.num_snippets} snippets",
  }
  return PlasticMemory.from_rule(rule), info


# ----------------------------------------------------------------------------------------------------------
# The task.


class Sequences(NamedTuple):
  """A batch of B sequences of L pairs (numpy int32)."""

  keys: np.ndarray  # [B, L] key tokens, distinct within a sequence
  values: np.ndarray  # [B, L] value tokens
  query: np.ndarray  # [B] one of the sequence's key tokens
  target: np.ndarray  # [B] its value token
  query_index: np.ndarray  # [B] its position in the sequence


def sample_sequences(rng: np.random.Generator, batch: int, length: int, num_keys: int, num_values: int):
  """`Sequences` of `batch` sequences of `length` pairs: keys drawn without replacement from `num_keys`,
  values with replacement from `num_values`, the query a uniformly drawn one of the keys."""
  if not 1 <= length <= num_keys:
    raise ValueError(f"sample_sequences: length {length} not in [1, num_keys = {num_keys}]")
  keys = np.argsort(rng.random((batch, num_keys)), axis=-1)[:, :length].astype(np.int32)
  values = rng.integers(0, num_values, (batch, length), dtype=np.int32)
  index = rng.integers(0, length, batch).astype(np.int32)
  rows = np.arange(batch)
  return Sequences(keys, values, keys[rows, index], values[rows, index], index)


def _rng(seed: int, tag: int, *more: int) -> np.random.Generator:
  return np.random.default_rng([seed, tag, *more])


# ----------------------------------------------------------------------------------------------------------
# The hosts. Each maps one sequence (keys [L], values [L], query []) to value logits [num_values].


class TokenCodes(nn.Module):
  """Learned codes of key and value tokens: `nn.Embed`, then tanh (or a straight-through sign), so that
  they can become the +-1 patterns the rule was meta-trained on."""

  num_keys: int
  num_values: int
  key_width: int
  value_width: int
  code: str = "tanh"
  code_scale: float = 1.0
  embed_init_std: float = 1.0

  def _code(self, e: jax.Array) -> jax.Array:
    soft = jnp.tanh(self.code_scale * e)
    if self.code == "sign":  # +-1 forward, tanh's gradient backward
      return soft + jax.lax.stop_gradient(jnp.where(e >= 0, 1.0, -1.0) - soft)
    return soft

  @nn.compact
  def __call__(self, keys, values, query):
    init = nn.initializers.normal(self.embed_init_std)
    key_embed = nn.Embed(self.num_keys, self.key_width, embedding_init=init, name="key_embed")
    value_embed = nn.Embed(self.num_values, self.value_width, embedding_init=init, name="value_embed")
    return self._code(key_embed(keys)), self._code(value_embed(values)), self._code(key_embed(query))


def _codes(cfg, key_width: int, value_width: int) -> TokenCodes:
  t, h = cfg.task, cfg.host
  return TokenCodes(
    t.num_keys, t.num_values, key_width, value_width, h.code, float(h.code_scale), float(h.embed_init_std)
  )


class PlasticHost(nn.Module):
  """Token codes -> a frozen plastic memory (write the L pairs, read the query) -> a linear decoder."""

  memory: PlasticMemory
  codes: TokenCodes
  num_values: int

  @nn.compact
  def __call__(self, keys, values, query):
    k, v, q = self.codes(keys, values, query)
    self.memory.write(k, v)  # [L, n_in], [L, n_out]
    recalled = self.memory.read(q[None])[0]  # [n_out]
    return nn.Dense(self.num_values, name="decoder")(recalled)


class LSTMHost(nn.Module):
  """Token codes -> an LSTM over `concat(key, value)` of each pair, then `concat(query, 0)` -> a linear
  decoder of its hidden state after the query.

  `length` (default L) is the number of real pairs when `keys` and `values` are padded to L slots: the
  query goes in at step `length` and the state after it is decoded, so the padding (after the query, and
  zeroed) changes nothing, and one compiled program serves every length up to L."""

  hidden: int
  codes: TokenCodes
  num_values: int

  @nn.compact
  def __call__(self, keys, values, query, length=None):
    k, v, q = self.codes(keys, values, query)
    length = keys.shape[0] if length is None else length
    pairs = jnp.concatenate([jnp.concatenate([k, v], axis=-1), jnp.zeros((1, k.shape[-1] + v.shape[-1]))])
    step = jnp.arange(pairs.shape[0])[:, None]
    last = jnp.concatenate([q, jnp.zeros(v.shape[-1:])])
    inputs = jnp.where(step < length, pairs, jnp.where(step == length, last, 0.0))  # [L + 1, n_in + n_out]
    states = nn.RNN(nn.OptimizedLSTMCell(self.hidden), name="lstm")(inputs[None])[0]
    return nn.Dense(self.num_values, name="decoder")(states[length])


def _init(module: nn.Module, seed: int) -> dict:
  """The module's variables at L = 1 (`params`; and for a plastic host `rule` and the empty `memory`)."""
  one = jnp.zeros((1,), jnp.int32)
  return jax.jit(module.init)(jax.random.PRNGKey(seed), one, one, one[0])


def lstm_hidden_for(target: int, codes: TokenCodes, num_values: int) -> int:
  """The smallest hidden size whose `LSTMHost` has at least `target` parameters. The count is quadratic
  in the hidden size, so it is taken from flax's shapes (`jax.eval_shape`) at three sizes and checked at
  the answer."""
  one = jnp.zeros((1,), jnp.int32)

  def count(h: int) -> int:
    shapes = jax.eval_shape(LSTMHost(h, codes, num_values).init, jax.random.PRNGKey(0), one, one, one[0])
    return trained_baselines.param_count(shapes)

  c1, c2, c3 = count(1), count(2), count(3)
  quadratic = lambda h: c1 + (c2 - c1) * (h - 1) + (c3 - 2 * c2 + c1) * (h - 1) * (h - 2) // 2  # noqa: E731
  hidden = 1
  while quadratic(hidden) < target:
    hidden += 1
  if count(hidden) != quadratic(hidden):
    raise RuntimeError("lstm_hidden_for: the LSTM host's parameter count is not quadratic in its size")
  return hidden


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation.


class Batch(NamedTuple):
  """What a host's compiled step takes: `Sequences` on the device, and for an LSTM host padded to a
  fixed number of slots with the true length of each sequence (a plastic host has one program per L)."""

  keys: jax.Array  # [B, slots]
  values: jax.Array  # [B, slots]
  query: jax.Array  # [B]
  target: jax.Array  # [B]
  length: jax.Array | None  # [B], or None when slots = L


def _batch(module: nn.Module, s: Sequences, slots: int) -> Batch:
  if not isinstance(module, LSTMHost):
    return Batch(*(jnp.asarray(a) for a in s[:4]), None)
  pad = ((0, 0), (0, slots - s.keys.shape[1]))
  length = np.full(s.query.shape, s.keys.shape[1], np.int32)
  return Batch(
    *(jnp.asarray(a) for a in (np.pad(s.keys, pad), np.pad(s.values, pad), s.query, s.target, length))
  )


def _logits_fn(module: nn.Module):
  """`logits(variables, batch) -> [B, num_values]`, one memory (or LSTM state) per sequence; a plastic
  host starts each from the empty memory in `variables`."""

  def one(variables, keys, values, query, length):
    extra = () if length is None else (length,)
    logits, _ = module.apply(variables, keys, values, query, *extra, mutable=["memory"])
    return logits

  def logits(variables, batch: Batch):
    length_axis = None if batch.length is None else 0
    fn = jax.vmap(one, in_axes=(None, 0, 0, 0, length_axis))
    return fn(variables, batch.keys, batch.values, batch.query, batch.length)

  return logits


def _train_step_fn(module: nn.Module, optimizer):
  logits_fn = _logits_fn(module)

  def loss_fn(params, others, batch):
    logits = logits_fn({**others, "params": params}, batch)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch.target).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == batch.target)

  @jax.jit
  def train_step(params, opt_state, others, batch):
    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, others, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, accuracy

  return train_step


def _correct_fn(module: nn.Module):
  logits_fn = _logits_fn(module)

  @jax.jit
  def correct(variables, batch):
    logits = logits_fn(variables, batch)
    return jnp.sum(jnp.argmax(logits, -1) == batch.target)

  return correct


def train_host(
  name: str, module: nn.Module, variables: dict, cfg, log, step_multiple: int = 1
) -> tuple[dict, dict]:
  """Trains `variables["params"]` for `step_multiple` x `train.num_steps` steps on the run's training
  stream (the same batches for every host, in the same order). Returns the trained variables and a
  JSON-ready record."""
  t, tr = cfg.task, cfg.train
  num_steps, log_every = step_multiple * tr.num_steps, step_multiple * tr.log_every
  optimizer = meta_train.make_optimizer(tr.learning_rate, tr.clip_norm)
  train_step = _train_step_fn(module, optimizer)
  params = variables["params"]
  others = {k: v for k, v in variables.items() if k != "params"}
  opt_state = optimizer.init(params)
  rng = _rng(cfg.seed, _TRAIN_TAG)
  lo, hi = (int(x) for x in t.train_lengths)
  start = time.perf_counter()
  window, history = [], []
  for step in range(1, num_steps + 1):
    length = int(rng.integers(lo, hi + 1))
    batch = sample_sequences(rng, tr.batch_size, length, t.num_keys, t.num_values)
    params, opt_state, loss, accuracy = train_step(params, opt_state, others, _batch(module, batch, hi))
    window.append((float(loss), float(accuracy)))
    if step % log_every == 0 or step == num_steps:
      loss_mean, acc_mean = (float(np.mean(x)) for x in zip(*window, strict=True))
      history.append({"step": step, "loss": loss_mean, "accuracy": acc_mean})
      log(
        f"{name}: step {step}/{num_steps}: loss {loss_mean:.3f}, train accuracy {acc_mean:.3f} "
        f"(mean of the last {len(window)} steps, L in {lo}..{hi})"
      )
      window = []
  seconds = time.perf_counter() - start
  record = {"num_steps": num_steps, "batch_size": tr.batch_size, "train_seconds": seconds, "history": history}
  return {**others, "params": params}, record


def evaluate_host(module: nn.Module, variables: dict, cfg) -> dict[str, float]:
  """Accuracy at every L of `task.eval_lengths` on the held-out sequences (the same for every host)."""
  t, e = cfg.task, cfg.eval
  correct = _correct_fn(module)
  out = {}
  for length in t.eval_lengths:
    rng = _rng(cfg.seed, _EVAL_TAG, int(length))
    hits = 0
    for _ in range(e.num_sequences // e.batch_size):
      batch = sample_sequences(rng, e.batch_size, int(length), t.num_keys, t.num_values)
      hits += int(correct(variables, _batch(module, batch, max(t.eval_lengths))))
    out[str(int(length))] = hits / e.num_sequences
  return out


def _rule_unchanged(before: dict, after: dict) -> bool:
  leaves_a, leaves_b = jax.tree.leaves(before), jax.tree.leaves(after)
  return len(leaves_a) == len(leaves_b) and all(
    np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(leaves_a, leaves_b, strict=True)
  )


def _paths(tree) -> list[str]:
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def run(cfg, workdir: str, figure_dir: str | None = None) -> dict:
  """Trains and evaluates every host; returns the results (also in `<workdir>/token_recall.json`)."""
  start = time.perf_counter()

  def log(text: str) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {text}", flush=True)

  validate(cfg)
  memory, rule_info = load_memory(cfg)  # before anything is compiled or written
  t = cfg.task
  codes = _codes(cfg, memory.topology.n_in, memory.topology.n_out)
  os.makedirs(workdir, exist_ok=True)
  log(
    f"rule {rule_info['name']}: {rule_info['params']} meta-parameters, {rule_info['neurons']} neurons, "
    f"meta-trained on {rule_info['meta_trained_on']} ({rule_info['meta_steps']} meta steps)"
  )

  hosts = {}
  plastic = PlasticHost(memory, codes, t.num_values)
  variables = _init(plastic, cfg.seed)
  if set(variables) != {"params", "rule", "memory"} or any("theta" in p for p in _paths(variables["params"])):
    raise RuntimeError(f"the plastic host's rule is not frozen: variables {sorted(variables)}")
  host_params = trained_baselines.param_count(variables["params"])
  total = host_params + rule_info["params"]
  hosts["plastic"] = (
    plastic,
    variables,
    {"params": host_params, "rule_params": rule_info["params"], "step_multiple": 1},
  )
  for h in cfg.lstm.hidden_sizes:
    hidden = int(h) or lstm_hidden_for(total, codes, t.num_values)
    module = LSTMHost(hidden, codes, t.num_values)
    variables = _init(module, cfg.seed)
    for m in sorted(int(m) for m in cfg.lstm.step_multiples):
      info = {"params": trained_baselines.param_count(variables["params"]), "rule_params": 0}
      info.update(hidden=hidden, matched=int(h) == 0, step_multiple=m)
      hosts.setdefault(f"lstm{hidden}" + (f"x{m}" if m > 1 else ""), (module, variables, info))
  for name, (_, _, info) in hosts.items():
    if info["step_multiple"] > 1:
      continue
    extra = f" + {info['rule_params']} frozen rule meta-parameters" if info["rule_params"] else ""
    log(f"{name}: {info['params']} trained parameters{extra}")

  results = {}
  for name, (module, variables, info) in hosts.items():
    rule_before = jax.device_get(variables.get("rule"))
    trained, record = train_host(name, module, variables, cfg, log, info["step_multiple"])
    if name == "plastic":
      record["rule_unchanged"] = _rule_unchanged(rule_before, trained["rule"])
      if not record["rule_unchanged"]:
        raise RuntimeError("training changed the frozen rule")
    t0 = time.perf_counter()
    accuracy = evaluate_host(module, trained, cfg)
    record.update(eval_seconds=time.perf_counter() - t0, accuracy=accuracy)
    results[name] = {**info, **record}
    log(f"{name}: trained in {record['train_seconds']:.0f} s; accuracy by L {_short(accuracy)}")

  machine = (
    f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, {jax.default_backend()}"
  )
  out = {
    "config": cfg.to_dict(),
    "rule": rule_info,
    "chance": 1.0 / t.num_values,
    "eval_lengths": [int(x) for x in t.eval_lengths],
    "hosts": results,
    "machine": machine,
    "wall_seconds": time.perf_counter() - start,
  }
  with open(os.path.join(workdir, "token_recall.json"), "w") as f:
    json.dump(out, f, indent=2)
  figures = [os.path.join(workdir, FIGURE)]
  if figure_dir:
    os.makedirs(figure_dir, exist_ok=True)
    figures.append(os.path.join(figure_dir, FIGURE))
  for path in figures:
    plot(out, path)
  print(format_table(out))
  log(f"done in {out['wall_seconds']:.0f} s; results in {workdir}/token_recall.json, figures {figures}")
  return out


def _short(accuracy: dict[str, float]) -> str:
  return ", ".join(f"{k}: {v:.3f}" for k, v in accuracy.items())


def _label(name: str, host: dict) -> str:
  if name == "plastic":
    return f"plastic memory ({host['params']:,} + {host['rule_params']:,} frozen)"
  matched = ", >= plastic" if host.get("matched") else ""
  steps = f", {host['step_multiple']}x the steps" if host["step_multiple"] > 1 else ""
  return f"LSTM, H = {host['hidden']} ({host['params']:,}{matched}){steps}"


def format_table(out: dict) -> str:
  names = list(out["hosts"])
  lines = [
    "Held-out accuracy (argmax value token) against L; parameters trained (+ frozen):",
    *(f"  {n}: {_label(n, out['hosts'][n])}" for n in names),
    f"{'L':>4}" + "".join(f"{n:>12}" for n in names) + f"{'chance':>10}",
  ]
  for length in out["eval_lengths"]:
    row = "".join(f"{out['hosts'][n]['accuracy'][str(length)]:>12.3f}" for n in names)
    lines.append(f"{length:>4}{row}{out['chance']:>10.3f}")
  return "\n".join(lines)


def plot(out: dict, path: str) -> None:
  """Accuracy against L for every host, the chance line, and the training range shaded; a small PNG
  (a 64-colour palette)."""
  fig, ax = plt.subplots(figsize=(8.0, 3.4), dpi=80)
  lo, hi = out["config"]["task"]["train_lengths"]
  ax.axvspan(lo - 0.3, hi + 0.3, color="0.92", lw=0, label=f"trained L ({lo} to {hi})")
  hidden = list(dict.fromkeys(h["hidden"] for h in out["hosts"].values() if "hidden" in h))
  ls = out["eval_lengths"]
  for name, host in out["hosts"].items():
    if name == "plastic":
      style, color = "o-", "C0"
    else:
      style, color = "s--" if host["step_multiple"] == 1 else "^:", f"C{1 + hidden.index(host['hidden'])}"
    ax.plot(ls, [host["accuracy"][str(x)] for x in ls], style, color=color, label=_label(name, host))
  ax.axhline(out["chance"], color="gray", lw=0.8, ls=":", label=f"chance (1/{round(1 / out['chance'])})")
  ax.set_ylim(-0.02, 1.02)
  ax.set_xticks(ls)
  ax.set_xlabel("L, (key, value) pairs in the sequence")
  ax.set_ylabel("held-out recall accuracy")
  task = out["config"]["task"]
  ax.set_title(
    f"associative recall over tokens ({task['num_keys']} keys, {task['num_values']} values)", fontsize=9
  )
  ax.legend(
    fontsize=7,
    loc="center left",
    bbox_to_anchor=(1.01, 0.5),
    title="parameters trained (+ frozen)",
    title_fontsize=7,
  )
  fig.tight_layout()
  figures.save_small_png(fig, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  cfg = _CONFIG.value
  if _QUICK.value:
    cfg = flagutil.with_variant(cfg, token_recall_configs.apply_variant, "quick")
  workdir = _WORKDIR.value or os.path.join("runs", "token_recall-quick" if _QUICK.value else "token_recall")
  try:
    run(cfg, workdir, _FIGURE_DIR.value or None)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
