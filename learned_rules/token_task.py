"""Associative recall over tokens: sequences of (key token, value token) pairs, then a query.

A sequence holds L pairs whose keys are distinct (drawn without replacement from `num_keys` tokens) and
whose values are drawn with replacement from `num_values` tokens; the query is one of its L keys, drawn
uniformly, and the target is that key's value. Sequences are drawn on the host with numpy, from a
generator of the run's seed and a stream tag (`sequence_rng`), so that the training batches and the
held-out sequences of every length are disjoint streams, the same for every host model.

Shapes: `B` sequences of `L` pairs.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

# Stream tags of `sequence_rng`: training batches and held-out sequences come from disjoint streams.
TRAIN_TAG, EVAL_TAG = 0, 1


@dataclasses.dataclass(frozen=True)
class TokenTask:
  """The token vocabularies and the sequence lengths L trained and evaluated.

  Attributes:
    num_keys: key tokens; L is at most this (keys are distinct within a sequence).
    num_values: value tokens; chance accuracy is 1 / num_values.
    train_lengths: (min, max): each training batch has one L, uniform in [min, max].
    eval_lengths: every L at which held-out accuracy is measured.
  """

  num_keys: int
  num_values: int
  train_lengths: tuple[int, int]
  eval_lengths: tuple[int, ...]


class Sequences(NamedTuple):
  """A batch of B sequences of L pairs (numpy int32)."""

  keys: np.ndarray  # [B, L] key tokens, distinct within a sequence
  values: np.ndarray  # [B, L] value tokens
  query: np.ndarray  # [B] one of the sequence's key tokens
  target: np.ndarray  # [B] its value token
  query_index: np.ndarray  # [B] its position in the sequence


def sample_sequences(
  rng: np.random.Generator, batch: int, length: int, num_keys: int, num_values: int
) -> Sequences:
  """`Sequences` of `batch` sequences of `length` pairs: keys drawn without replacement from `num_keys`,
  values with replacement from `num_values`, the query a uniformly drawn one of the keys."""
  if not 1 <= length <= num_keys:
    raise ValueError(f"sample_sequences: length {length} not in [1, num_keys = {num_keys}]")
  keys = np.argsort(rng.random((batch, num_keys)), axis=-1)[:, :length].astype(np.int32)
  values = rng.integers(0, num_values, (batch, length), dtype=np.int32)
  index = rng.integers(0, length, batch).astype(np.int32)
  rows = np.arange(batch)
  return Sequences(keys, values, keys[rows, index], values[rows, index], index)


def sequence_rng(seed: int, tag: int, *more: int) -> np.random.Generator:
  """The generator of stream `tag` (`TRAIN_TAG`, or `EVAL_TAG` with the length L) of run `seed`."""
  return np.random.default_rng([seed, tag, *more])


def training_batches(rng: np.random.Generator, task: TokenTask, batch: int):
  """Endless training batches: each a `Sequences` of `batch` sequences of one L, uniform in
  `task.train_lengths`, drawn from `rng` (the L first, then the batch)."""
  lo, hi = task.train_lengths
  while True:
    length = int(rng.integers(lo, hi + 1))
    yield sample_sequences(rng, batch, length, task.num_keys, task.num_values)


def held_out_sequences(seed: int, task: TokenTask, length: int, num_sequences: int, batch: int):
  """The held-out sequences of run `seed` at L = `length`, in `num_sequences / batch` `Sequences` of
  `batch` each: the same for every host model, and disjoint from the training stream."""
  rng = sequence_rng(seed, EVAL_TAG, length)
  for _ in range(num_sequences // batch):
    yield sample_sequences(rng, batch, length, task.num_keys, task.num_values)
