"""absl flags shared by the experiment modules."""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from learned_rules import config as config_lib


def define(define_fn, name: str, *args, **kwargs) -> flags.FlagHolder:
  """Defines flag `name` with `define_fn` (e.g. `flags.DEFINE_string`), or reuses it when another
  experiment module imported into the same process (the test suite) defined it first. Only one `main`
  runs per process, so they never disagree; a reused flag keeps the first module's default and help."""
  if name in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
  return define_fn(name, *args, **kwargs)


def with_variant(cfg, apply_variant, name: str, config_flag: str = "config"):
  """A copy of `cfg` (the value of config flag `config_flag`) with variant `name` applied by
  `apply_variant(cfg, name)` (e.g. `--quick`) and then the command line's `--config.x=...` overrides
  again on top, so that an override the user gave wins over the variant."""
  cfg = config_lib.with_overrides(cfg, {})
  apply_variant(cfg, name)
  return config_lib.with_overrides(cfg, config_flags.get_override_values(flags.FLAGS[config_flag]))
