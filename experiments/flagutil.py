"""absl flags shared by the experiment modules."""

from __future__ import annotations

from absl import flags


def define(define_fn, name: str, *args, **kwargs) -> flags.FlagHolder:
  """Defines flag `name` with `define_fn` (e.g. `flags.DEFINE_string`), or reuses it when another
  experiment module imported into the same process (the test suite) defined it first. Only one `main`
  runs per process, so they never disagree; a reused flag keeps the first module's default and help."""
  if name in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
  return define_fn(name, *args, **kwargs)
