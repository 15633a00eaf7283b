"""Learning from remembering: snippets `(x, f(x))` from a teacher `f` fixed for the episode.

docs/DESIGN.md, "Learning from remembering". A network that stores the pairs it is shown is fitting
them; if the pairs come from one function, recall on stored keys measures memory and prediction on keys
never shown measures learning. Teachers (`TEACHERS`), drawn afresh in every episode from its key:

  linear  y = sign(A x), A `[n_out, n_in]` standard normal: one random perceptron per output bit;
  mlp     y = sign(W2 tanh(W1 x)), W1 `[hidden, n_in]`, W2 `[n_out, hidden]`, normal over sqrt(fan-in).

Keys x are random +-1 vectors of `n_in` bits, as in `hetero`. A teacher episode follows the `hetero`
schedule of `tasks.sample_episode` (K pairs `(x_k, f(x_k))`, each shown P steps with the value as the
teaching input, G blank steps, C cycles; a delay of D blank steps), then asks, in one random interleaved
order, every stored key (recall) and U fresh keys that are none of the stored ones (generalisation),
each for R steps without teaching input. Both kinds are scored on the output neurons against `f(x)`;
`sample_episode` returns the episode twice, with the score of either kind of query.

Every method is a causal readout of the same inputs (`readout(args, episode, init_key, spec)`, as
`baselines.READOUT_FNS`), evaluated on the same held-out episodes; `network_readout_fn` runs a learned
rule exactly as its own evaluation does (`evaluate._eval_padded`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import evaluation as evaluate_lib
from learned_rules import network, tasks, unroll

TEACHERS = ("linear", "mlp")


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
  """Static description of the teachers of a study (hashable).

  Attributes:
    kind: one of `TEACHERS`.
    hidden: hidden units of the `mlp` teacher.
    num_unseen: U, unseen keys asked per episode; 0 asks as many as there are stored keys (K).
  """

  kind: str = "linear"
  hidden: int = 32
  num_unseen: int = 0

  def __post_init__(self):
    if self.kind not in TEACHERS:
      raise ValueError(f"teacher: unknown kind {self.kind!r}; one of {TEACHERS}")

  def unseen(self, spec: tasks.TaskSpec) -> int:
    """U for the task `spec`."""
    return self.num_unseen or spec.num_snippets


def sample_teacher(key: jax.Array, teacher: TeacherSpec, n_in: int, n_out: int) -> dict[str, jax.Array]:
  """A teacher's weights: `{"w1": [n_out, n_in]}` (linear) or `{"w1": [hidden, n_in], "w2": [n_out,
  hidden]}` (mlp)."""
  k1, k2 = jax.random.split(key)
  if teacher.kind == "linear":
    return {"w1": jax.random.normal(k1, (n_out, n_in))}
  return {
    "w1": jax.random.normal(k1, (teacher.hidden, n_in)) / np.sqrt(n_in),
    "w2": jax.random.normal(k2, (n_out, teacher.hidden)) / np.sqrt(teacher.hidden),
  }


def apply_teacher(teacher: TeacherSpec, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """Values `[..., n_out]` (+-1; a zero pre-activation gives +1) of keys `x` `[..., n_in]`."""
  if teacher.kind == "linear":
    pre = x @ params["w1"].T
  else:
    pre = jnp.tanh(x @ params["w1"].T) @ params["w2"].T
  return jnp.where(pre >= 0, 1.0, -1.0)


def sample_unseen_keys(key: jax.Array, stored: jax.Array, num: int) -> jax.Array:
  """`num` random +-1 keys `[num, n_in]`, none equal to any of the `stored` keys `[K, n_in]` (each
  key that is drawn again until it is new; K must be below 2^n_in). They may repeat among themselves."""
  n_in = stored.shape[-1]

  def is_stored(keys):
    return jnp.any(jnp.all(keys[:, None, :] == stored[None, :, :], axis=-1), axis=-1)  # [num]

  def redraw(carry):
    keys, i = carry
    fresh = tasks.sample_snippets(jax.random.fold_in(key, i), tasks.TaskSpec(n_in=n_in), num)[0]
    return jnp.where(is_stored(keys)[:, None], fresh, keys), i + 1

  first = tasks.sample_snippets(jax.random.fold_in(key, 0), tasks.TaskSpec(n_in=n_in), num)[0]
  keys, _ = jax.lax.while_loop(lambda c: jnp.any(is_stored(c[0])), redraw, (first, jnp.int32(1)))
  return keys


def query_steps(spec: tasks.TaskSpec, teacher: TeacherSpec) -> int:
  """Time steps T of one teacher episode: the `hetero` storage and delay, then K + U queries."""
  return spec.store_steps + (spec.num_snippets + teacher.unseen(spec)) * spec.query_steps


def sample_episode(
  key: jax.Array, spec: tasks.TaskSpec, teacher: TeacherSpec
) -> tuple[tasks.Episode, tasks.Episode]:
  """One teacher episode (module docstring) of `query_steps(spec, teacher)` steps, as two `Episode`s
  with the same input `x` `[T, N]` and target `[T, n_out]` (`f(x)` on every query step): the first
  scores the queries of stored keys, the second those of unseen keys. `spec.num_queries` is ignored
  (every stored key is asked) and so is `spec.cue_corruption` (keys are asked whole)."""
  k_teacher, k_keys, k_unseen, k_order = jax.random.split(key, 4)
  params = sample_teacher(k_teacher, teacher, spec.n_in, spec.n_out)
  keys = tasks.sample_snippets(k_keys, spec, spec.num_snippets)[0]
  num_unseen = teacher.unseen(spec)
  asked = jnp.concatenate([keys, sample_unseen_keys(k_unseen, keys, num_unseen)])  # [K + U, n_in]
  is_unseen = jnp.arange(len(asked)) >= spec.num_snippets
  order = jax.random.permutation(k_order, len(asked))
  asked, is_unseen = asked[order], is_unseen[order]

  sched, taught = tasks._store_schedule(spec)  # noqa: SLF001  (the hetero schedule itself, not a copy)
  shown = (sched >= 0)[:, None]
  idx = np.maximum(sched, 0)
  store_in = jnp.where(shown, keys[idx], 0.0)
  store_teach = jnp.where(taught[:, None], apply_teacher(teacher, params, keys)[idx], 0.0)
  query_in = jnp.repeat(asked, spec.query_steps, axis=0)
  query_unseen = jnp.repeat(is_unseen, spec.query_steps).astype(jnp.float32)
  n_store = len(sched)

  x = tasks.place_inputs(
    spec,
    jnp.concatenate([store_in, query_in]),
    jnp.concatenate([store_teach, jnp.zeros((len(query_in), spec.n_out))]),
  )
  target = jnp.concatenate([jnp.zeros((n_store, spec.n_out)), apply_teacher(teacher, params, query_in)])
  unseen = jnp.concatenate([jnp.zeros(n_store), query_unseen])
  asked_steps = jnp.concatenate([jnp.zeros(n_store), jnp.tile(tasks.query_score(spec), len(asked))])
  return (
    tasks.Episode(x=x, target=target, score=asked_steps - unseen),
    tasks.Episode(x=x, target=target, score=unseen),
  )


def _bit_accuracy(readout: jax.Array, episode: tasks.Episode) -> tuple[jax.Array, jax.Array]:
  """Bit accuracy and perfect fraction over the scored steps of one episode (readout `[T, n_out]`).

  A readout of exactly 0 scores half a bit, as everywhere (`unroll.bit_credit`): the Hebbian and
  pseudo-inverse readouts of a key orthogonal to every stored key are 0 (one unseen 16-bit key in five
  is orthogonal to a single stored key)."""
  right = unroll.bit_credit(readout, episode.target)
  weights = episode.score[:, None] * jnp.ones_like(readout)
  accuracy = jnp.sum(right * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  perfect = jnp.all(readout * episode.target > 0, axis=-1)
  return accuracy, jnp.sum(perfect * episode.score) / jnp.maximum(jnp.sum(episode.score), 1.0)


def scores(readout: jax.Array, stored: tasks.Episode, unseen: tasks.Episode) -> dict[str, jax.Array]:
  """Scores `[]` of one episode's readouts `[T, n_out]`: bit accuracy of `sign(readout)` on the stored
  keys (`recall`) and on the unseen keys (`generalisation`), and the fraction of each kind of query
  answered perfectly. Every episode scores as many bits of each kind, so the mean over episodes is the
  mean over bits."""
  recall, perfect_recall = _bit_accuracy(readout, stored)
  generalisation, perfect_generalisation = _bit_accuracy(readout, unseen)
  return {
    "recall": recall,
    "perfect_recall": perfect_recall,
    "generalisation": generalisation,
    "perfect_generalisation": perfect_generalisation,
  }


# Drawing episodes costs microseconds, but XLA's optimising CPU backend takes seconds per K to compile
# their random bits (13.8 s against 3.8 s unoptimised, K = 8, measured on a busy 2-core machine).
@functools.partial(
  jax.jit,
  static_argnames=("specs", "teacher", "batch"),
  compiler_options={"xla_backend_optimization_level": 0},
)
def held_out_episodes(key: jax.Array, specs: tuple, teacher: TeacherSpec, batch: int):
  """The `batch` teacher episodes drawn from `key` for each task of `specs` (tasks that differ only in
  K; episode b has the same teacher at every K), padded at the end with blank, unscored steps to the
  longest and stacked: `(stored, unseen)` `Episode`s `[len(specs), B, T, ...]`, the steps of each task
  `[len(specs)]` int32, and one key per episode `[B]` for whatever a method initialises (the network's
  initial state, the SGD net's weights), split from `key` as `unroll.init_batch_states` splits it."""
  steps = max(query_steps(spec, teacher) for spec in specs)
  k_ep, k_init = jax.random.split(key)
  keys = jax.random.split(k_ep, batch)
  drawn = [jax.vmap(sample_episode, in_axes=(0, None, None))(keys, spec, teacher) for spec in specs]
  stack = lambda *a: jnp.stack(a)  # noqa: E731
  stored = jax.tree.map(stack, *[tasks.pad_episodes(s, steps) for s, _ in drawn])
  unseen = jax.tree.map(stack, *[tasks.pad_episodes(u, steps) for _, u in drawn])
  lengths = jnp.asarray([query_steps(spec, teacher) for spec in specs], jnp.int32)
  return stored, unseen, lengths, jax.random.split(k_init, batch)


@functools.partial(jax.jit, static_argnames=("problem",))
def network_scores(
  theta, topo: network.Topology, problem: unroll.Problem, stored, unseen, lengths, init_keys
):
  """`scores` `{name: [G, B]}` of a learned rule on padded episodes `[G, B, T, ...]` (`held_out_episodes`),
  each group run for its own `lengths[g]` steps from the initial states of `init_keys` `[B]`: the
  network step and initial states of `evaluate.eval_batch`, in a loop with a run-time trip count, so
  that padding costs no steps and a sweep over K compiles once (as `evaluate._eval_padded`)."""
  states = jax.vmap(network.init_net_state, in_axes=(None, None, 0, None))(
    theta, topo, init_keys, problem.init_noise
  )

  def one_group(args):
    stored_g, unseen_g, length = args
    readout = evaluate_lib.readouts_for(theta, topo, problem, states, stored_g.x, length)
    return jax.vmap(scores)(readout, stored_g, unseen_g)

  return jax.lax.map(one_group, (stored, unseen, lengths))


@functools.partial(jax.jit, static_argnames=("readout", "spec"))
def readout_scores(readout, args, spec: tasks.TaskSpec, stored, unseen, init_keys) -> dict[str, jax.Array]:
  """`scores` `{name: [G, B]}` of `readout(args_g, episode, init_key, spec)` (a causal readout `[T, n_out]`
  that stores nothing on steps without teaching input, as `baselines.READOUT_FNS`, so blank padding
  changes nothing) on padded episodes `[G, B, T, ...]`. `args` has a leading `[G]` axis (e.g. a step
  size per K). `readout` must be the same object from call to call, or every call compiles again."""
  per_episode = jax.vmap(readout, in_axes=(None, 0, 0, None))
  per_group = jax.vmap(per_episode, in_axes=(0, 0, None, None))
  return jax.vmap(jax.vmap(scores))(per_group(args, stored, init_keys, spec), stored, unseen)


@functools.partial(
  jax.jit,
  static_argnames=("teacher", "n_in", "n_out", "num_fit", "num_test", "batch"),
  compiler_options={"xla_backend_optimization_level": 0},  # as `held_out_episodes`: it runs in milliseconds
)
def linear_ceiling(
  key: jax.Array, teacher: TeacherSpec, n_in: int, n_out: int, num_fit: int, num_test: int, batch: int
) -> jax.Array:
  """Bit accuracy `[]` on fresh keys of the least-squares linear map `sign(W x)` fitted to `num_fit`
  pairs of the teacher (the best a linear readout does with plenty of data; `pseudo_inverse` at large K),
  averaged over `batch` teachers and `num_test` test keys each."""

  def one(k):
    k_teacher, k_fit, k_test = jax.random.split(k, 3)
    params = sample_teacher(k_teacher, teacher, n_in, n_out)
    draw = lambda kk, n: tasks.sample_snippets(kk, tasks.TaskSpec(n_in=n_in), n)[0]  # noqa: E731
    x_fit, x_test = draw(k_fit, num_fit), draw(k_test, num_test)
    # Normal equations (a solve compiles in a fraction of an SVD's time); the ridge of 1e-6 per pair
    # only guards a singular fit of few pairs.
    gram = x_fit.T @ x_fit + 1e-6 * num_fit * jnp.eye(n_in)
    w = jnp.linalg.solve(gram, x_fit.T @ apply_teacher(teacher, params, x_fit))  # [n_in, n_out]
    return jnp.mean((x_test @ w) * apply_teacher(teacher, params, x_test) > 0)

  return jnp.mean(jax.vmap(one)(jax.random.split(key, batch)))
