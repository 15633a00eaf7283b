"""Trained baselines for the capacity study, run on exactly the episodes the learned rule sees.

Like `baselines.hebbian`, each reads an `Episode` step by step: the key bits `[T, n_in]` and the teaching
bits `[T, n_out]` of `baselines.split_input`, and returns readouts `[T, n_out]` scored by
`unroll.recall_metrics`. Their evaluation draws its episodes from the key exactly as `baselines.eval_batch`
and `unroll.episode_objective` do (`sample_episodes`), in the batches of `evaluate.mean_over_batches`.

- `recurrent` (memory in activations): a GRU (or LSTM) fed `concat(key bits, teaching bits)` at every step,
  with a linear readout, its weights trained by back-propagation through time on the task (`train_recurrent`,
  on one K or on a mixture of K) and then frozen: whatever it remembers within an episode lives in its
  hidden state. `fit_recurrent` gives it every chance: the learning rate of a small grid that recalls best
  on separate tuning episodes, then several seeds at that rate. The capacity study sizes it to the learned
  network's meta-parameter count (`hidden_for_params`) and, capped by what a CPU can train, to the
  learned network's state: its bodies and synapses (`state_size`).
- `online_backprop` (memory in weights, by gradient descent): the learned network's neurons as an ordinary
  feed-forward net `n_in -> hidden tanh -> n_out linear`, freshly initialised in every episode and trained
  during the episode by one SGD step on `0.5 ||f(key) - teach||^2` at every step that carries a teaching
  input, with its step size tuned on separate episodes (`tune_online_backprop`).
- `random_delta` (memory in the readout weights only): fixed random tanh layers, freshly drawn in every
  episode and never trained, with a linear readout of the last one learned during the episode by the
  normalised delta rule at every step that carries a teaching input, its step size tuned on separate
  episodes (`tune_random_delta_over_k`). The capacity study gives it the hidden layers of the network
  evaluated: it tells "this rule form cannot store through hidden layers" apart from "meta-training has
  not found how", since random features with a delta-rule readout are one way to store through them.
- `random_projection` (the same fixed random layers, readout written by sequential projection): each pair
  is written along the part of its features that no stored pair uses (`random_projection`), so up to
  as many pairs as the last layer has units are stored exactly: the pseudo-inverse on the random
  features, reached online by a local write. No step size. Next to `random_delta` it separates what the
  hidden features can hold from what a one-pass delta rule keeps of it.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import baselines, metrics, network, rules, supervised, tasks, unroll
from learned_rules import evaluation as evaluate_lib

CELLS = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}
# SGD step sizes tried by `tune_online_backprop`: a log grid, finest where the optimum lies for the default
# task (+-1 keys of 16 bits, 32 tanh units, P = 2: 0.02 to 0.05 for K = 1 to 16; one step of about 1 / the
# tangent kernel's diagonal, ~0.05 here, stores a snippet exactly). The optimum scales about as 1 / n_in.
DEFAULT_STEP_SIZES = (0.003, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 0.5, 1.0, 3.0)
# Adam learning rates tried by `fit_recurrent`.
DEFAULT_LEARNING_RATES = (1e-3, 3e-3, 1e-2)


sample_episodes = baselines.sample_episodes  # the network's held-out episodes, and per-episode keys
param_count = supervised.param_count


# ----------------------------------------------------------------------------------------------------------
# Recurrent network trained by back-propagation through time.


class RecurrentNet(nn.Module):
  """A recurrent cell scanned over time from a zero state, with a linear readout of its hidden state.

  Maps inputs `[..., T, n_in + n_out]` to readouts `[..., T, n_out]`; the readout at step t sees the
  inputs up to and including step t, as the network's does.
  """

  hidden: int
  n_out: int
  cell: str = "gru"

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    if self.cell not in CELLS:
      raise ValueError(f"cell: unknown cell {self.cell!r}; one of {tuple(CELLS)}")
    states = nn.RNN(CELLS[self.cell](features=self.hidden, name="cell"))(inputs)
    return nn.Dense(self.n_out, name="readout")(states)


@functools.partial(jax.jit, static_argnames=("n_in", "n_out", "hidden", "cell"))
def init_recurrent(key: jax.Array, n_in: int, n_out: int, hidden: int, cell: str = "gru") -> dict:
  """Flax variables `{"params": ...}` of a `RecurrentNet` for keys of `n_in` and values of `n_out` bits
  (jitted: one compile instead of an op-by-op dispatch of every initialiser)."""
  return RecurrentNet(hidden, n_out, cell).init(key, jnp.zeros((1, n_in + n_out)))


def hidden_for_params(target: int, n_in: int, n_out: int, cell: str = "gru") -> int:
  """The hidden size whose `RecurrentNet` (cell and readout) has the parameter count closest to `target`
  (the smaller one on a tie), e.g. 19 (3303 parameters) for 3301 with 16-bit keys and values and a GRU.

  The count is quadratic in the hidden size for every cell (`H^2` recurrent weights, `H` x inputs input
  weights, `H` x `n_out` readout weights, biases), so it is taken from flax's own parameter shapes at three
  hidden sizes (`jax.eval_shape`, no compute) and extended exactly by Newton's forward differences.
  """

  def count(hidden: int) -> int:
    init = functools.partial(init_recurrent, n_in=n_in, n_out=n_out, hidden=hidden, cell=cell)
    return param_count(jax.eval_shape(init, jax.random.PRNGKey(0)))

  c1, c2, c3 = count(1), count(2), count(3)
  quadratic = lambda h: c1 + (c2 - c1) * (h - 1) + (c3 - 2 * c2 + c1) * (h - 1) * (h - 2) // 2  # noqa: E731
  hidden = 1
  while quadratic(hidden + 1) <= target:
    hidden += 1
  if quadratic(hidden + 1) - target < target - quadratic(hidden):
    hidden += 1
  if count(hidden) != quadratic(hidden):  # a cell whose count is not quadratic in the hidden size
    raise ValueError(f"hidden_for_params: the {cell!r} parameter count is not quadratic in the hidden size")
  return hidden


def recurrent(
  params: dict, episode: tasks.Episode, spec: tasks.TaskSpec, hidden: int, cell: str = "gru"
) -> jax.Array:
  """Readouts `[T, n_out]` of the recurrent net over one episode, fed `concat(key, teach)` `[T, n_in +
  n_out]`. Any episode length works with the same params."""
  keys, teach = baselines.split_input(episode, spec)
  return RecurrentNet(hidden, spec.n_out, cell).apply(params, jnp.concatenate([keys, teach], axis=-1))


def state_size(topo: network.Topology, rule_spec: rules.RuleSpec) -> int:
  """Numbers in the state of a learned network: its bodies `[N, Db]` and, for every synapse that exists
  (`num_synapses`, not the padding of the blocks), `Ds` numbers. 64 x 8 + 4032 x 4 = 16,640 for the `full`
  network of 64 neurons with the default rule; a recurrent net with that many hidden units carries as many
  numbers from step to step."""
  return topo.num_neurons * rule_spec.body_dim + topo.num_synapses * rule_spec.synapse_dim


def _recurrent_batch(params, spec, key, batch, hidden, cell) -> tuple[jax.Array, tasks.Episode]:
  episodes, _ = sample_episodes(spec, key, batch)
  readout = jax.vmap(recurrent, in_axes=(None, 0, None, None, None))(params, episodes, spec, hidden, cell)
  return readout, episodes


def _as_specs(specs) -> tuple[tasks.TaskSpec, ...]:
  """One task, or several that differ only in K and their number of queries (a sweep), as a tuple."""
  specs = (specs,) if isinstance(specs, tasks.TaskSpec) else tuple(specs)
  if not specs:
    raise ValueError("specs: needs at least one task")
  shape = lambda spec: dataclasses.replace(spec, num_snippets=1, num_queries=1)  # noqa: E731
  if any(shape(spec) != shape(specs[0]) for spec in specs):
    raise ValueError("specs: the tasks of a mixture may differ only in K and their number of queries")
  return specs


@functools.cache
def _recurrent_train_step(spec: tasks.TaskSpec, batch: int, hidden: int, cell: str, clip_norm: float):
  """`supervised.make_train_step` for the recurrent net on `batch` episodes of `spec` drawn from the
  step's key (its `batch` argument), one per task and size: the runs of a whole learning-rate grid, and
  every seed, share its compiled program."""

  def loss_fn(params, key):
    readout, episodes = _recurrent_batch(params, spec, key, batch, hidden, cell)
    return unroll.readout_loss(readout, episodes, "mse"), unroll.recall_metrics(readout, episodes)

  return supervised.make_train_step(loss_fn, clip_norm)


def train_recurrent(
  specs,
  key: jax.Array,
  *,
  hidden: int,
  cell: str = "gru",
  num_steps: int,
  batch_size: int = 16,
  learning_rate: float = 3e-3,
  clip_norm: float = 1.0,
  log_every: int = 0,
  label: str = "",
) -> tuple[dict, list[dict]]:
  """Trains a `RecurrentNet` by back-propagation through whole episodes of one task or of a mixture.

  `specs`: one `TaskSpec`, or several that differ only in K (a sweep). Step s trains on a batch of
  `specs[s % len(specs)]`, so one run trains every K of the sweep in turn, `num_steps / len(specs)` steps
  each. Loss: the network's `mse` loss (`unroll.readout_loss`) on the scored steps, minimised by Adam after
  global-norm clipping (`supervised.make_optimizer`). `key` splits into the initialisation key and a
  data key; the batch of step s is `sample_episodes(specs[s % len(specs)], fold_in(data key, s),
  batch_size)`. `key` must differ from the evaluation key (the study evaluates on
  `evaluate.eval_key(seed)`), so that the evaluation episodes are held out.

  Returns the trained variables and a history of `{"step", "K", "loss", "bit_accuracy"}` on the training
  batch of step s (before its update) at the first and the last step of every K and every `log_every`
  steps. With `log_every > 0` the records every `log_every` steps and the last are also shown as a
  `metrics.Progress` line headed by `label` (live on a terminal, absl INFO otherwise, as the
  meta-training driver does).
  """
  # A mixture by turns, one compiled step per K, rather than every K padded to the longest episode
  # (`tasks.pad_episodes`, one compiled step): a step costs its episode length T (the GRU scans every
  # step, blank or not), and a sweep's mean T is a third of its longest (44 of 130 steps in the quick
  # sweep, 51 of 130 in the full one). Measured on 2 CPU cores at batch 16: a 128-unit net takes ~9 ms a
  # step by turns against 20 to 30 ms padded, a 19-unit net ~3 against ~5 ms, which the few seconds of
  # compilation per K (shared by every rate and seed of a fit) about even out. Skipping the padded steps
  # with a `lax.cond` in the scan keeps one program, but made a 128-unit step about 3 times dearer.
  specs = _as_specs(specs)
  k_init, k_data = jax.random.split(key)
  params = init_recurrent(k_init, specs[0].n_in, specs[0].n_out, hidden, cell)
  opt_state = supervised.make_optimizer(learning_rate, clip_norm).init(params)
  rate = jnp.asarray(learning_rate, jnp.float32)
  label = label or f"recurrent {cell} {hidden}: "
  progress = metrics.Progress(num_steps, label=label) if log_every > 0 else None
  history = []
  for step in range(num_steps):
    spec = specs[step % len(specs)]
    train_step = _recurrent_train_step(spec, batch_size, hidden, cell, clip_norm)
    params, opt_state, loss, recall = train_step(params, opt_state, rate, jax.random.fold_in(k_data, step))
    ends = step < len(specs) or step >= num_steps - len(specs)
    if ends or (log_every > 0 and step % log_every == 0):
      record = {
        "step": step,
        "K": spec.num_snippets,
        "loss": float(loss),
        "bit_accuracy": float(recall["bit_accuracy"]),
      }
      history.append(record)
      if progress is not None and (step % log_every == 0 or step == num_steps - 1):
        progress.update(step, record["loss"], record["bit_accuracy"])
  if progress is not None:
    progress.close()
  return params, history


def recall_over_k(
  params: dict, specs, key: jax.Array, num_episodes: int, hidden: int, cell: str = "gru", batch: int = 64
) -> list[dict]:
  """Mean recall metrics of the recurrent net, one dict per task of `specs` (a sweep over K), over exactly
  the held-out episodes `evaluate.evaluate` gives the network for `key` (`baselines.evaluate_over_k`)."""
  readout = recurrent_readout_fn(hidden, cell)
  return baselines.evaluate_over_k(readout, params, _as_specs(specs), key, num_episodes, batch)


def seed_key(train_key: jax.Array, seed: int) -> jax.Array:
  """The `key` of `train_recurrent` for seed `seed` of a `fit_recurrent`."""
  return jax.random.fold_in(train_key, seed)


@dataclasses.dataclass
class RecurrentFit:
  """What `fit_recurrent` gives.

  Attributes:
    learning_rate: the chosen rate.
    tuning: `{rate: mean bit accuracy over the K of the sweep on the tuning episodes}`, every rate tried.
    params: the trained variables of every seed at the chosen rate, seed 0 first.
  """

  learning_rate: float
  tuning: dict[float, float]
  params: list[dict]


def _same_key(a: jax.Array, b: jax.Array) -> bool:
  data = lambda k: jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k  # noqa: E731
  return bool(jnp.array_equal(data(a), data(b)))


def fit_recurrent(
  specs,
  train_key: jax.Array,
  tune_key: jax.Array,
  *,
  hidden: int,
  cell: str = "gru",
  learning_rates=DEFAULT_LEARNING_RATES,
  num_seeds: int = 3,
  num_steps: int,
  batch_size: int = 16,
  clip_norm: float = 1.0,
  tune_episodes: int = 128,
  train=None,
) -> RecurrentFit:
  """The recurrent baseline given every chance: trained on the mixture `specs` (`train_recurrent`) at the
  best learning rate of a grid, with several seeds.

  Seed 0 is trained at every rate of `learning_rates` and scored by its mean bit accuracy over the K of
  `specs` on `tune_episodes` episodes drawn from `tune_key` (`recall_over_k`); the best rate (the first on
  a tie) is chosen with its seed-0 run, and seeds 1 .. `num_seeds` - 1 are trained at it. Seed s trains
  from `seed_key(train_key, s)`. `tune_key` must differ from `train_key` and from the evaluation key, so
  that the tuning episodes are neither training batches nor evaluation episodes.

  `train(learning_rate, seed)`, returning trained variables, replaces `train_recurrent(specs,
  seed_key(train_key, seed), ...)` (the capacity study keeps every run in its workdir).
  """
  specs = _as_specs(specs)
  if not learning_rates or num_seeds < 1:
    raise ValueError("fit_recurrent: needs at least one learning rate and one seed")
  if _same_key(train_key, tune_key):
    raise ValueError("fit_recurrent: the tuning key must differ from the training key")
  if train is None:

    def train(learning_rate: float, seed: int) -> dict:
      params, _ = train_recurrent(
        specs,
        seed_key(train_key, seed),
        hidden=hidden,
        cell=cell,
        num_steps=num_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        clip_norm=clip_norm,
      )
      return params

  tuning, chosen = {}, None
  for learning_rate in (float(lr) for lr in learning_rates):
    params = train(learning_rate, 0)
    recall = recall_over_k(params, specs, tune_key, tune_episodes, hidden, cell)
    tuning[learning_rate] = float(np.mean([r["bit_accuracy"] for r in recall]))
    if max(tuning, key=tuning.get) == learning_rate:  # the best so far, and not a tie with an earlier one
      chosen = params
  best = max(tuning, key=tuning.get)
  return RecurrentFit(best, tuning, [chosen] + [train(best, seed) for seed in range(1, num_seeds)])


@functools.partial(jax.jit, static_argnames=("spec", "batch", "hidden", "cell"))
def recurrent_eval_batch(
  params: dict, spec: tasks.TaskSpec, key: jax.Array, batch: int, hidden: int, cell: str = "gru"
) -> dict[str, jax.Array]:
  """Recall metrics of the trained recurrent net over the `batch` episodes `baselines.eval_batch` draws
  from `key`."""
  readout, episodes = _recurrent_batch(params, spec, key, batch, hidden, cell)
  return unroll.recall_metrics(readout, episodes)


def evaluate_recurrent(
  params: dict,
  spec: tasks.TaskSpec,
  key: jax.Array,
  num_episodes: int,
  hidden: int,
  cell: str = "gru",
  batch: int = 64,
) -> dict[str, float]:
  """Mean recall metrics over exactly the held-out episodes `evaluate.evaluate` gives the network."""
  eval_fn = lambda k, n: recurrent_eval_batch(params, spec, k, n, hidden, cell)  # noqa: E731
  return evaluate_lib.mean_over_batches(eval_fn, key, num_episodes, batch)


# ----------------------------------------------------------------------------------------------------------
# Feed-forward network trained online, within the episode, by SGD.


def init_mlp(key: jax.Array, n_in: int, hidden: int, n_out: int) -> dict[str, jax.Array]:
  """Weights `w1` `[n_in, hidden]`, `w2` `[hidden, n_out]` (LeCun normal) and zero biases `b1`, `b2`."""
  k1, k2 = jax.random.split(key)
  init = jax.nn.initializers.lecun_normal()
  return {
    "w1": init(k1, (n_in, hidden)),
    "b1": jnp.zeros(hidden),
    "w2": init(k2, (hidden, n_out)),
    "b2": jnp.zeros(n_out),
  }


def mlp(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """`[..., n_in]` -> `[..., n_out]`: one tanh hidden layer, linear outputs."""
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def online_backprop(
  episode: tasks.Episode, spec: tasks.TaskSpec, lr: float | jax.Array, hidden: int, key: jax.Array
) -> jax.Array:
  """Readouts `[T, n_out]` of a feed-forward net `init_mlp(key, ...)` trained during the episode.

  At every step t the readout is `f(key_t)` with the current weights; then, if the step carries a
  teaching input (any nonzero teaching bit), one SGD step of size `lr` on `0.5 ||f(key_t) - teach_t||^2`.
  So there is one gradient step per presentation step with a teaching input: a snippet shown for P steps
  in each of C cycles gets C x P steps. That is what the learned rule gets too (it may update its synapses
  at every step the snippet is shown), and the tuned step size absorbs the factor P.
  """
  keys, teach = baselines.split_input(episode, spec)
  stored = jnp.any(teach != 0, axis=-1)

  def step(params, inputs):
    x, value, is_stored = inputs
    out, pullback = jax.vjp(lambda p: mlp(p, x), params)
    (grads,) = pullback(out - value)  # gradient of 0.5 ||out - value||^2
    step_size = jnp.where(is_stored, lr, 0.0)
    return jax.tree.map(lambda p, g: p - step_size * g, params, grads), out

  _, readout = jax.lax.scan(step, init_mlp(key, spec.n_in, hidden, spec.n_out), (keys, teach, stored))
  return readout


@functools.partial(jax.jit, static_argnames=("spec", "batch", "hidden"))
def online_backprop_eval_batch(
  lr: float | jax.Array, spec: tasks.TaskSpec, key: jax.Array, batch: int, hidden: int = 32
) -> dict[str, jax.Array]:
  """Recall metrics of `online_backprop` over the `batch` episodes `baselines.eval_batch` draws from
  `key`, each with its own initial weights. `lr` is traced: a sweep of step sizes compiles once."""
  episodes, init_keys = sample_episodes(spec, key, batch)
  readout = jax.vmap(online_backprop, in_axes=(0, None, None, None, 0))(episodes, spec, lr, hidden, init_keys)
  return unroll.recall_metrics(readout, episodes)


def evaluate_online_backprop(
  lr: float, spec: tasks.TaskSpec, key: jax.Array, num_episodes: int, hidden: int = 32, batch: int = 64
) -> dict[str, float]:
  """Mean recall metrics over exactly the held-out episodes `evaluate.evaluate` gives the network."""
  eval_fn = lambda k, n: online_backprop_eval_batch(lr, spec, k, n, hidden)  # noqa: E731
  return evaluate_lib.mean_over_batches(eval_fn, key, num_episodes, batch)


def tune_online_backprop(
  spec: tasks.TaskSpec,
  key: jax.Array,
  step_sizes=DEFAULT_STEP_SIZES,
  num_episodes: int = 256,
  hidden: int = 32,
  batch: int = 64,
) -> tuple[float, dict[float, float]]:
  """The step size of highest bit accuracy (the first on a tie) over `num_episodes` tuning episodes drawn
  from `key`, and the table `{step size: bit accuracy}`. `key` must differ from the evaluation key, so
  that the step size is not tuned on the evaluation episodes."""
  table = {
    float(lr): evaluate_online_backprop(float(lr), spec, key, num_episodes, hidden, batch)["bit_accuracy"]
    for lr in step_sizes
  }
  return max(table, key=table.get), table


# ----------------------------------------------------------------------------------------------------------
# Several K in one program (`baselines.eval_batch_over_k`): the trained baselines are causal and, on a step
# without a teaching input, change nothing but their readout, so blank padding steps are harmless.


@functools.cache
def recurrent_readout_fn(hidden: int, cell: str = "gru"):
  """`readout(params, episode, init_key, spec)` of the recurrent net for `baselines.eval_batch_over_k`
  (one function object per size, so repeated sweeps reuse their compilation)."""
  return lambda params, episode, init_key, spec: recurrent(params, episode, spec, hidden, cell)


@functools.cache
def online_backprop_readout_fn(hidden: int):
  """`readout(lr, episode, init_key, spec)` of `online_backprop` for `baselines.eval_batch_over_k`."""
  return lambda lr, episode, init_key, spec: online_backprop(episode, spec, lr, hidden, init_key)


def _tune_over_k(readout, specs, key, step_sizes, num_episodes, batch):
  """The best step size of `readout` (`readout(lr, episode, init_key, spec)`) for every task of `specs`
  (the first on a tie) over `num_episodes` episodes drawn from `key`, and the bit accuracies
  `[len(step_sizes)][len(specs)]`."""
  table = [
    [
      r["bit_accuracy"]
      for r in baselines.evaluate_over_k(readout, float(lr), specs, key, num_episodes, batch)
    ]
    for lr in step_sizes
  ]
  best = [
    float(step_sizes[max(range(len(step_sizes)), key=lambda i: table[i][k])]) for k in range(len(specs))
  ]
  return best, table


def tune_online_backprop_over_k(
  specs, key, step_sizes=DEFAULT_STEP_SIZES, num_episodes=256, hidden=32, batch=64
):
  """`tune_online_backprop` for every task of `specs` at once: the best step size of each (the first on
  a tie) and the bit accuracies `[len(step_sizes)][len(specs)]`."""
  return _tune_over_k(online_backprop_readout_fn(hidden), specs, key, step_sizes, num_episodes, batch)


# ----------------------------------------------------------------------------------------------------------
# Fixed random hidden layers with a delta-rule readout, learned during the episode.


def init_random_features(key: jax.Array, n_in: int, hidden: tuple[int, ...]) -> tuple[jax.Array, ...]:
  """Weights `[fan_in, fan_out]` of tanh layers of sizes `hidden` on `n_in` inputs, one per layer, LeCun
  normal (pre-activations of unit variance for +-1 inputs, so the units are neither saturated nor
  linear); no biases, so a step without a key reads out nothing."""
  sizes = (n_in, *hidden)
  init = jax.nn.initializers.lecun_normal()
  return tuple(
    init(jax.random.fold_in(key, layer), (sizes[layer], sizes[layer + 1])) for layer in range(len(hidden))
  )


def random_features(weights: tuple[jax.Array, ...], x: jax.Array) -> jax.Array:
  """`[..., n_in]` -> `[..., hidden[-1]]`: the last layer's activity of the tanh layers `weights`
  (`init_random_features`); `x` itself when there are none."""
  for w in weights:
    x = jnp.tanh(x @ w)
  return x


def _random_feature_steps(
  episode: tasks.Episode, spec: tasks.TaskSpec, hidden: tuple[int, ...], key: jax.Array
):
  """What a readout of random features sees at every step: the last layer's activity for the step's key
  `[T, H]` (layers `init_random_features(key, ...)`), the teaching bits `[T, n_out]`, and whether the step
  carries a teaching input `[T]` (any nonzero teaching bit)."""
  keys, teach = baselines.split_input(episode, spec)
  features = random_features(init_random_features(key, spec.n_in, hidden), keys)
  return features, teach, jnp.any(teach != 0, axis=-1)


def random_delta(
  episode: tasks.Episode, spec: tasks.TaskSpec, lr: float | jax.Array, hidden: tuple[int, ...], key: jax.Array
) -> jax.Array:
  """Readouts `[T, n_out]` of fixed random tanh layers of sizes `hidden` (`init_random_features(key,
  ...)`) with a linear readout learned during the episode by the normalised delta rule.

  At every step t the readout is `y_t = h_t W`, `h_t` `[H]` the last hidden layer's activity for `key_t`
  and W `[H, n_out]` starting at zero; then, if the step carries a teaching input (any nonzero teaching
  bit), `W += lr h_t (teach_t - y_t)^T / (h_t . h_t + 1e-6)`: readout first, then update, as
  `online_backprop`. `lr = 1` stores the current pair exactly (`h_t W = teach_t` after the update),
  overwriting what other pairs left along `h_t`; smaller steps average the presentations of a snippet.
  """
  features, teach, stored = _random_feature_steps(episode, spec, hidden, key)

  def step(w, inputs):  # w [H, n_out], so that y = h @ w
    h, value, is_stored = inputs
    out = h @ w
    rate = jnp.where(is_stored, lr, 0.0) / (h @ h + 1e-6)
    return w + rate * jnp.outer(h, value - out), out

  w0 = jnp.zeros((features.shape[-1], spec.n_out), features.dtype)
  _, readout = jax.lax.scan(step, w0, (features, teach, stored))
  return readout


@functools.cache
def random_delta_readout_fn(hidden: tuple[int, ...]):
  """`readout(lr, episode, init_key, spec)` of `random_delta` for `baselines.eval_batch_over_k`, its
  random layers drawn from each episode's key (one function object per sizes: call it with a tuple)."""
  return lambda lr, episode, init_key, spec: random_delta(episode, spec, lr, hidden, init_key)


def random_projection(
  episode: tasks.Episode, spec: tasks.TaskSpec, hidden: tuple[int, ...], key: jax.Array
) -> jax.Array:
  """Readouts `[T, n_out]` of the fixed random tanh layers of `random_delta` (the same layers for the
  same `key`) with a linear readout written by sequential projection: each teaching step writes its
  pair along the part of its features that no stored pair has used, so the pairs stored before it keep
  their readout exactly.

  State: the readout W `[H, n_out]`, zero at first, and a projector Q `[H, H]`, the identity at first.
  At every step t the readout is `y_t = h_t W`; then, if the step carries a teaching input,
  `z = Q h_t`, `W += z (teach_t - y_t)^T / (z . z)` and `Q -= z z^T / (z . z)`. Since `z . h_t = z . z`,
  after the write `h_t W = teach_t`, and since z is orthogonal to every stored feature vector, their
  readouts do not move: while the stored features are linearly independent (K <= H), W is the
  minimum-norm least-squares readout `pinv(H_stored) V`, the pseudo-inverse on the features. A step
  whose `z . z` is below `1e-4 h_t . h_t` (a pair shown again, or features already spanned) writes
  nothing: once the features are spanned the memory stops storing rather than forgetting.

  Every update is local with one scalar: Q lives on the synapses among the hidden neurons (z is one pass
  of their activity through them), W's update is an output's error times a hidden neuron's z, and
  `z . z` is a sum over the hidden neurons that every neuron wired to all of them receives. No step
  size to tune.
  """
  features, teach, stored = _random_feature_steps(episode, spec, hidden, key)

  def step(carry, inputs):
    w, q = carry
    h, value, is_stored = inputs
    out = h @ w
    z = q @ h
    zz = z @ z
    rate = jnp.where(is_stored & (zz > 1e-4 * (h @ h)), 1.0 / jnp.maximum(zz, 1e-30), 0.0)
    return (w + rate * jnp.outer(z, value - out), q - rate * jnp.outer(z, z)), out

  size = features.shape[-1]
  w0 = jnp.zeros((size, spec.n_out), features.dtype)
  _, readout = jax.lax.scan(step, (w0, jnp.eye(size, dtype=features.dtype)), (features, teach, stored))
  return readout


@functools.cache
def random_projection_readout_fn(hidden: tuple[int, ...]):
  """`readout(None, episode, init_key, spec)` of `random_projection` for `baselines.eval_batch_over_k`,
  its random layers drawn from each episode's key as `random_delta`'s."""
  return lambda _, episode, init_key, spec: random_projection(episode, spec, hidden, init_key)


def random_hebbian(
  episode: tasks.Episode, spec: tasks.TaskSpec, hidden: tuple[int, ...], key: jax.Array, with_inputs: bool
) -> jax.Array:
  """Readouts `[T, n_out]` of the outer-product memory on the fixed random tanh layers of `random_delta`
  (the same layers for the same `key`), with the key bits beside them when `with_inputs` (a network
  whose output neurons receive synapses from its inputs as well as from its hidden neurons): at step t,
  `W_t = W_{t-1} + f_t teach_t^T` and the readout is `f_t W_t`, f the features (`baselines.outer_product`,
  which `baselines.hebbian` runs on the key bits alone). A Hebbian store on every feature the network's
  outputs can read; nothing to tune (the readout's sign does not depend on a step size)."""
  features, teach, _ = _random_feature_steps(episode, spec, hidden, key)
  if with_inputs:
    features = jnp.concatenate([baselines.split_input(episode, spec)[0], features], axis=-1)
  return baselines.outer_product(features, teach)


@functools.cache
def random_hebbian_readout_fn(hidden: tuple[int, ...], with_inputs: bool):
  """`readout(None, episode, init_key, spec)` of `random_hebbian`, its random layers drawn from each
  episode's key as `random_delta`'s."""
  return lambda _, episode, init_key, spec: random_hebbian(episode, spec, hidden, init_key, with_inputs)


def tune_random_delta_over_k(specs, key, step_sizes, num_episodes, hidden: tuple[int, ...], batch=64):
  """The best step size of `random_delta` with hidden layers `hidden` for every task of `specs` (the
  first on a tie) over `num_episodes` tuning episodes drawn from `key`, and the bit accuracies
  `[len(step_sizes)][len(specs)]`. `key` must differ from the evaluation key."""
  readout = random_delta_readout_fn(tuple(int(h) for h in hidden))
  return _tune_over_k(readout, specs, key, step_sizes, num_episodes, batch)
