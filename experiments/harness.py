"""The one harness of every command: its flags, config variants, logging and exit statuses.

A command is a page (`experiments/remember.py`): a `main(cfg, workdir, opts)` that makes one library
call and writes its outputs under `workdir`, and

  if __name__ == "__main__":
    harness.run(main, config="remember", workdir=default_workdir, options={...})

`run` defines the command's flags (so `--help` lists them, with the config's variants), parses them, and
turns every failure a user can act on into one line on stderr and an exit status:

  0    done
  2    bad input: an invalid config, flag, variant, workdir, checkpoint or rule, refused before any
       training (or a save that failed, the last checkpoint intact)
  1    the run stopped on too many non-finite meta steps in a row (the last checkpoint intact)
  143  stopped by SIGTERM after saving a checkpoint: rerun the same command to resume

Flags are defined when the command runs, not when it is imported, so a test process may import every
command.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import signal
import sys
import types
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

from learned_rules import checkpointing, configs, files, meta_train, pretrained, sharding
from learned_rules import config as config_lib
from learned_rules import metrics as metrics_lib

EXIT_NONFINITE = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 128 + signal.SIGTERM

# Errors that mean "the input was wrong": the message names what to change.
BAD_INPUT = (
  config_lib.ConfigError,
  checkpointing.IncompatibleCheckpointError,
  checkpointing.DamagedCheckpointError,
  checkpointing.WorkdirError,
  pretrained.RuleSaveError,
  pretrained.RuleLoadError,
)


class UsageError(ValueError):
  """A flag value the command cannot use; the message says which and why."""


def _variants_of(config_path: str) -> dict:
  """The `VARIANTS` of the config file at `config_path`."""
  spec = importlib.util.spec_from_file_location("_harness_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return getattr(module, "VARIANTS", {})


def _define(config: str | None, workdir_help: str, extra: dict, distributed: bool) -> list[str]:
  """Defines the command's flags; returns their names."""
  names = []
  if config is not None:
    variants = _variants_of(configs.path(config))
    config_flags.DEFINE_config_file(
      "config",
      configs.path(config),
      f"Config file[:variant[,variant]], overridable field by field with --config.<field>=value. "
      f"Default: learned_rules/configs/{config}.py. Its variants: {', '.join(variants) or '(none)'}.",
      lock_config=True,
    )
    names.append("config")
    if "quick" in variants:
      flags.DEFINE_bool("quick", False, "The same as adding the config's `quick` variant.")
      names.append("quick")
  flags.DEFINE_string("workdir", None, workdir_help)
  names.append("workdir")
  if distributed:
    flags.DEFINE_bool(
      "distributed",
      False,
      "Join a multi-process run (jax.distributed.initialize) first: every process runs this same "
      "command; the coordinator, process count and id come from the flags below, or are discovered on "
      "a TPU pod or under SLURM. Only process 0 writes logs, metrics and summaries.",
    )
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (--distributed).")
    flags.DEFINE_integer("num_processes", None, "Processes in the run (--distributed).")
    flags.DEFINE_integer("process_id", None, "This process's index, from 0 (--distributed).")
    names += ["distributed", "coordinator_address", "num_processes", "process_id"]
  for name, (define_fn, default, help_text) in extra.items():
    define_fn(name, default, help_text)
    names.append(name)
  # `--help` lists the main module's key flags: make every flag of this command one of them.
  for name in names:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  return names


def _parse(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag (or config, or variant) one `error:` line and exit 2."""
  try:
    return flags.FLAGS(_packaged(argv))
  except flags.Error as e:
    message = str(e)
    if "Traceback" in message:  # ml_collections wraps an error of the config file in its traceback
      last = message.strip().splitlines()[-1]
      message = "--config: " + re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _config(config: str | None):
  """The parsed config, with `--quick` applied as a variant under the command line's overrides."""
  if config is None:
    return None
  filename = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")[0]
  if not os.path.isfile(filename):
    raise UsageError(
      f"--config: no config file {filename!r}, nor a config of that name in learned_rules/configs"
    )
  cfg = flags.FLAGS.config
  overrides = config_flags.get_override_values(flags.FLAGS["config"])  # {"eval.k_values": value, ...}
  repeated_tuple_overrides(sys.argv[1:], overrides)
  if "quick" in flags.FLAGS and flags.FLAGS.quick:
    cfg = config_lib.with_overrides(cfg, {})
    configs.apply_variants(cfg, "quick", _variants_of(filename))
    cfg = config_lib.with_overrides(cfg, overrides)
  return cfg


def repeated_tuple_overrides(argv: list[str], overrides: dict) -> None:
  """Raises `UsageError` for a tuple field overridden more than once in `argv` (`overrides`: the parsed
  values by field, `config_flags.get_override_values`): ml_collections joins the repeats
  (`--config.eval.k_values=(24,) --config.eval.k_values=(32,)` gives `(24, 32)`) where every other
  field keeps the last, so a command appended to would measure what nobody asked."""
  given = collections.Counter(
    arg[len("--config.") :].partition("=")[0] for arg in argv if arg.startswith("--config.")
  )
  for field, n in given.items():
    value = overrides.get(field)
    if n > 1 and isinstance(value, tuple | list):
      raise UsageError(
        f"--config.{field}: given {n} times; a tuple field's repeats are joined, giving "
        f"{tuple(value)}, not replaced: give it once"
      )


def _packaged(argv: list[str]) -> list[str]:
  """`argv` with a `--config` file that does not exist here (`learned_rules/configs/x.py:v` given from
  another folder, or just `x:v`) replaced by the package's own config of that name, if it has one."""
  out = []
  for arg in argv:
    if arg.startswith("--config="):
      path, sep, variant = arg[len("--config=") :].partition(":")
      stem = os.path.splitext(os.path.basename(path))[0]
      if not os.path.isfile(path) and os.path.isfile(configs.path(stem)):
        arg = f"--config={configs.path(stem)}{sep}{variant}"
    out.append(arg)
  return out


def exit_status(error: BaseException) -> int | None:
  """The exit status of the module docstring for `error`, or None if it is a bug (a traceback)."""
  if isinstance(error, BAD_INPUT + (UsageError,)):
    return EXIT_BAD_INPUT
  if isinstance(error, meta_train.NonFiniteError):
    return EXIT_NONFINITE
  if isinstance(error, meta_train.Preempted):
    return EXIT_PREEMPTED
  return None


def call(main: Callable, cfg, workdir: str | None, opts) -> object:
  """`main(cfg, workdir, opts)`, each failure a user can act on one line on stderr and an exit."""
  try:
    return main(cfg, workdir, opts)
  except Exception as e:
    status = exit_status(e)
    if status is None:
      raise
    print(f"{'stopped' if status == EXIT_PREEMPTED else 'error'}: {e}", file=sys.stderr)
    sys.exit(status)


def run(
  main: Callable,
  *,
  config: str | None = None,
  workdir: Callable | str | None = None,
  workdir_help: str = "Folder for everything the command writes.",
  options: dict | None = None,
  distributed: bool = False,
) -> None:
  """Defines the command's flags, parses them and calls `main(cfg, workdir, opts)`.

  Args:
    main: the command's body. `cfg` is the parsed config (None without `config`), `opts` a namespace of
      the values of `options`.
    config: the name of its config in learned_rules/configs/ (the `--config` default), or None.
    workdir: the default workdir, or a function of the config and `--quick` giving it; None makes
      `--workdir` required.
    options: `{name: (absl DEFINE function, default, help)}`, the command's own flags.
    distributed: whether the command joins multi-process runs (`--distributed` and its flags).
  """
  extra = dict(options or {})

  def _main(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
      sys.exit(EXIT_BAD_INPUT)
    metrics_lib.quiet_library_logs()
    values = flags.FLAGS
    joined = distributed and values.distributed
    if joined:
      try:
        sharding.initialize_distributed(values.coordinator_address, values.num_processes, values.process_id)
      except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    opts = types.SimpleNamespace(**{name: values[name].value for name in extra})
    cfg = call(lambda *_: _config(config), None, None, None)
    folder = values.workdir
    if folder is None and callable(workdir):
      folder = workdir(cfg, "quick" in values and values.quick)
    elif folder is None:
      folder = workdir
    if folder is None:
      print("error: --workdir: required", file=sys.stderr)
      sys.exit(EXIT_BAD_INPUT)
    try:
      call(main, cfg, folder, opts)
    except SystemExit as e:
      if joined and e.code == EXIT_PREEMPTED:  # every process stopped at the same step
        sharding.shutdown_distributed()
      raise
    if joined:
      sharding.shutdown_distributed()

  _define(config, workdir_help, extra, distributed)
  app.run(_main, flags_parser=_parse)


def figure_dir(workdir: str, named: str | None) -> str:
  """Where a command draws its figures: `named` (`--figure_dir`, e.g. docs/figures) or the workdir."""
  folder = named or workdir
  files.makedirs(folder)
  return folder
