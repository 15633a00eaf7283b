"""Host models of the token-recall study: models that keep (key, value) token pairs in a memory.

Each maps one sequence, keys `[L]`, values `[L]` and a query `[]` (token ids, `token_task.Sequences`),
to value logits `[num_values]`; `logits_fn` runs one on a `Batch` of `B` sequences. Both hosts have the
same learned token encoders (`TokenCodes`) and a linear decoder, and keep the pairs in

- `PlasticHost`: a frozen `PlasticMemory` run by a learned rule (the rule in the `rule` collection,
  outside `params`, so the host's optimizer never sees it), or
- `LSTMHost`: an LSTM, sized to the plastic host's parameter count by `lstm_hidden_for`.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import supervised
from learned_rules.memory import PlasticMemory
from learned_rules.token_task import Sequences

CODES = ("tanh", "sign")


class TokenCodes(nn.Module):
  """Learned codes of key and value tokens: `nn.Embed`, then tanh (or a straight-through sign), so that
  they can become the +-1 patterns the rule was meta-trained on.

  Maps keys `[L]`, values `[L]` and a query `[]` to codes `[L, key_width]`, `[L, value_width]` and
  `[key_width]` (the query shares the keys' embedding).
  """

  num_keys: int
  num_values: int
  key_width: int
  value_width: int
  code: str = "tanh"  # one of CODES
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


def init_host(module: nn.Module, seed: int) -> dict:
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
    return supervised.param_count(shapes)

  c1, c2, c3 = count(1), count(2), count(3)
  quadratic = lambda h: c1 + (c2 - c1) * (h - 1) + (c3 - 2 * c2 + c1) * (h - 1) * (h - 2) // 2  # noqa: E731
  hidden = 1
  while quadratic(hidden) < target:
    hidden += 1
  if count(hidden) != quadratic(hidden):
    raise RuntimeError("lstm_hidden_for: the LSTM host's parameter count is not quadratic in its size")
  return hidden


class Batch(NamedTuple):
  """What a host's compiled step takes: `Sequences` on the device, and for an LSTM host padded to a
  fixed number of slots with the true length of each sequence (a plastic host has one program per L)."""

  keys: jax.Array  # [B, slots]
  values: jax.Array  # [B, slots]
  query: jax.Array  # [B]
  target: jax.Array  # [B]
  length: jax.Array | None  # [B], or None when slots = L


def to_batch(module: nn.Module, s: Sequences, slots: int) -> Batch:
  """`s` as the `Batch` of `module`: for an `LSTMHost` padded to `slots` >= L pairs."""
  if not isinstance(module, LSTMHost):
    return Batch(*(jnp.asarray(a) for a in s[:4]), None)
  pad = ((0, 0), (0, slots - s.keys.shape[1]))
  length = np.full(s.query.shape, s.keys.shape[1], np.int32)
  return Batch(
    *(jnp.asarray(a) for a in (np.pad(s.keys, pad), np.pad(s.values, pad), s.query, s.target, length))
  )


def logits_fn(module: nn.Module):
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
