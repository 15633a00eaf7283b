r"""Learning from remembering: does a rule meta-trained only to remember random pairs learn a function?

  python -m experiments.learning                  # full: 10 K values, 256 held-out episodes per point
  python -m experiments.learning --figure_dir=docs/figures/learning   # ... and redraw the docs' figure
  python -m experiments.learning --quick          # the same figure at reduced resolution (minutes)
  python -m experiments.learning --config=learned_rules/configs/learning.py:tiny --workdir=/tmp/learning
  python -m experiments.learning --config.teachers=mlp --config.rule=runs/remember-hetero-full-K8-seed0

Every episode draws a teacher `f` (learned_rules/teacher.py: `linear`, y = sign(A x); `mlp`,
y = sign(W2 tanh(W1 x))) and shows K pairs `(x, f(x))` on the `hetero` schedule of the rule's own
config; then it asks every stored key (recall) and as many unseen keys (generalisation). The rule
(`rule`: a shipped rule's name, a run directory or a saved rule; it must be a `hetero` rule) runs
unchanged; the baselines (`baselines`) see the same episodes: `online_backprop` (a fresh
n_in -> hidden tanh -> n_out net per episode, one SGD step per teaching step, its step size tuned per
teacher and per K on `tune_episodes` other episodes, for the measure `tune_on`), `hebbian` (outer-product
memory, no decay), `hebbian_decay` (the same with a per-step decay, the one of `hebbian_decays` whose
recall against K is closest to the rule's: a memory that forgets as fast) and `pseudo_inverse` (the
least-squares linear store). Variants: `tiny` (seconds, for tests), `quick`. The study itself is
`learned_rules.learning_study`.
"""

from learned_rules import config as config_lib
from learned_rules import configs


def get_config(variant: str = "") -> config_lib.ConfigDict:
  cfg = config_lib.ConfigDict()
  cfg.seed = 0  # evaluation episodes: evaluation.eval_key(seed); tuning episodes: another fold of it
  cfg.rule = "hetero"
  cfg.teachers = "linear,mlp"  # comma-separated, from teacher.TEACHERS
  cfg.teacher_hidden = 32  # hidden units of the mlp teacher
  cfg.num_unseen = 0  # U, unseen keys asked per episode; 0 asks as many as stored (K)
  cfg.k_values = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
  cfg.num_episodes = 256  # held-out episodes per (teacher, K)
  cfg.batch = 64  # episodes per evaluation batch
  cfg.baselines = "online_backprop,hebbian,hebbian_decay,pseudo_inverse"
  # hebbian_decay: the Hebbian memory with the per-step decay of this grid whose recall against K is
  # closest to the rule's (on the evaluation episodes; matched on recall, compared on generalisation).
  cfg.hebbian_decays = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 1.0)

  cfg.online_backprop = config_lib.ConfigDict()
  cfg.online_backprop.hidden = 32  # as the rule's network's hidden neurons
  cfg.online_backprop.step_sizes = (0.003, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 0.5)
  cfg.online_backprop.tune_episodes = 128
  cfg.online_backprop.tune_on = "generalisation"  # generalisation | recall: the bit accuracy tuned for

  # The best linear readout: least squares on `num_fit` pairs of each of `teachers` teachers.
  cfg.ceiling = config_lib.ConfigDict()
  cfg.ceiling.num_fit = 4096
  cfg.ceiling.teachers = 256
  cfg.ceiling.num_test = 256

  configs.apply_variants(cfg, variant, VARIANTS)
  return cfg


def _tiny(cfg):
  cfg.k_values = (1, 3)
  cfg.num_episodes = 4
  cfg.batch = 4
  cfg.online_backprop.step_sizes = (0.03, 0.3)
  cfg.hebbian_decays = (0.9, 1.0)
  cfg.online_backprop.tune_episodes = 4
  cfg.ceiling.num_fit = 64
  cfg.ceiling.teachers = 4
  cfg.ceiling.num_test = 16


def _quick(cfg):
  cfg.k_values = (1, 2, 4, 8, 16, 32, 64)
  cfg.num_episodes = 64
  cfg.online_backprop.step_sizes = (0.01, 0.02, 0.03, 0.05, 0.1)  # where the full run's optima lie
  cfg.online_backprop.tune_episodes = 64
  cfg.ceiling.teachers = 64


VARIANTS = {"tiny": _tiny, "quick": _quick}
