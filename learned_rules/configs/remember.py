r"""Meta-train the update rules to remember snippets (docs/DESIGN.md, "The remember-snippets task").

Default: `hetero` on a `full` network of 64 neurons (16 input, 16 output, 32 hidden), K = 8 snippets,
then the same network meta-trained with synapse updates off, on CPU in a few minutes:

  python -m experiments.remember
  python -m experiments.remember --config=learned_rules/configs/remember.py:tiny --workdir=/tmp/tiny
  python -m experiments.remember --config=learned_rules/configs/remember.py:auto \
      --config.task.cue_corruption=0.25
  python -m experiments.remember --config=learned_rules/configs/remember.py:streaming

Variants (`:name`, combinable with `,`, e.g. `:tiny,auto`): `tiny` (seconds, for tests), `auto`
(completion from a corrupted cue), `streaming` (never-reset stream, truncated windows), `layered`,
`layered_feedback` (both with one query step more and keys held for the latency, which one hidden
layer adds), `sparse`, `mesh2d` (a 2-D device mesh: batch x neurons), `mixture` (a meta-batch of
the network and one twice as large, at K and 2K: one rule trained on both), `routing` (the
activation-only control that can route: synapse updates off, every synapse's fixed weights
meta-trained; no learned rule, and no synapses-off twin run: it is a synapses-off network itself).
"""

from learned_rules import config as config_lib
from learned_rules import configs


def get_config(variant: str = "") -> config_lib.ConfigDict:
  cfg = config_lib.ConfigDict()
  cfg.seed = 0
  # Also meta-train the same network with synapse updates off (its own run, same budget) and
  # report both: the learned rule stores snippets in synapses only if it beats that run.
  cfg.baseline_synapses_off = True

  cfg.net = config_lib.ConfigDict()
  cfg.net.topology = "full"  # full | layered | layered_feedback | sparse
  cfg.net.num_inputs = 16  # key (and auto pattern) width
  cfg.net.num_outputs = 16  # value width
  cfg.net.num_hidden = 32  # full, sparse
  cfg.net.hidden_layers = (32,)  # layered, layered_feedback
  cfg.net.density = 0.5  # sparse: every neuron receives from round(density * (N - 1)) others
  cfg.net.mask_seed = 0  # sparse
  cfg.net.self_connections = False  # full
  cfg.net.synapse_updates = True  # ablation: False freezes synapses at their initial state
  cfg.net.body_recurrence = True  # ablation: False makes bodies forget their previous state
  # Control (needs synapse_updates=False): every synapse's fixed state is its own meta-parameter,
  # trained with theta, with no noise: a trained recurrent network of the same wiring.
  cfg.net.trained_synapses = False
  cfg.net.init_noise = 0.1  # std of the noise added to the learned initial states
  # Control: > 0 makes every input -> hidden synapse a fixed random draw of this std (never updated),
  # so that the hidden neurons are fixed random functions of the key and the rule writes the rest.
  cfg.net.random_input_synapses = 0.0

  cfg.rule = config_lib.ConfigDict()
  cfg.rule.body_dim = 8  # Db
  cfg.rule.synapse_dim = 4  # Ds
  cfg.rule.act_dim = 4  # Da
  cfg.rule.emb_dim = 8  # E
  cfg.rule.hidden = 32  # hidden units of f_b and f_s (a saved rule with fewer starts a run with more)
  cfg.rule.bilinear = True  # pre x post bilinear term in every hidden unit of f_s
  # sqrt | mean | sum | sqrt_ref: divide summed messages by sqrt(fan-in), fan-in, 1, or
  # sqrt(fan-in x reference_fan_in)
  cfg.rule.message_norm = "sqrt"
  # The fan-in at which the rule is plain (0: none; 63 is the default network's). With it, the synapse
  # decay is sigmoid(lambda) ** (reference_fan_in / fan-in): neurons with more inputs forget more slowly.
  cfg.rule.reference_fan_in = 0
  cfg.rule.decay_power = 1.0  # with reference_fan_in: synapse time constants grow as fan-in ** this
  cfg.rule.scale_rate = False  # with reference_fan_in: the write rate times (reference_fan_in / fan-in)
  cfg.rule.rate_power = 0.5  # ... to this power
  cfg.rule.center_synapses = False  # subtract each neuron's mean incoming synapse state after every update
  # give each synapse update its post neuron's own error (teaching input minus its recall without it)
  cfg.rule.error_input = False
  cfg.rule.init_decay = 0.95
  cfg.rule.init_rate = 0.12
  cfg.rule.fast_synapse = True  # split-first-layer synapse update (same numbers, faster)

  cfg.task = config_lib.ConfigDict()
  cfg.task.protocol = "hetero"  # hetero | auto | streaming
  cfg.task.num_snippets = 8  # K
  cfg.task.present_steps = 2  # P
  cfg.task.gap_steps = 0  # G
  cfg.task.cycles = 1  # C
  cfg.task.delay_steps = 2  # D
  cfg.task.num_queries = 0  # Q; 0 asks for every stored snippet
  cfg.task.query_steps = 2  # R
  cfg.task.cue_corruption = 0.0  # fraction of cue bits zeroed at recall
  cfg.task.max_lag = 4  # streaming: Dmax
  cfg.task.window = 24  # streaming: W steps per truncated window
  # A key needs L = (synapse hops from inputs to outputs) - 1 steps to reach the outputs (0 in `full`,
  # the hidden-layer count in `layered`); a task whose query steps are all earlier is refused.
  cfg.task.score_reachable = True  # score only the query steps from which the key can reach the outputs
  cfg.task.hold_for_latency = False  # show each key L steps before its value, so the value meets it
  # Score no query step before this one (0-based) either: 1 in `full` scores only the steps a key can
  # reach the outputs by through a hidden neuron.
  cfg.task.first_scored_step = 0

  cfg.train = config_lib.ConfigDict()
  cfg.train.batch_size = 16
  cfg.train.num_steps = 250
  cfg.train.learning_rate = 3e-3
  cfg.train.clip_norm = 1.0
  cfg.train.decay_steps = 0  # > 0: cosine decay of the learning rate to a tenth over these steps
  cfg.train.loss = "mse"  # mse | logistic
  cfg.train.remat = "step"  # none | step | neurons | nested: what the meta-gradient stores per step
  cfg.train.log_every = 20
  cfg.train.checkpoint_every = 50
  cfg.train.max_to_keep = 2
  # A meta step whose loss or gradient is not finite is skipped (theta unchanged); this many in a row
  # stop the run with an error, its last checkpoint intact (docs/RELIABILITY.md).
  cfg.train.max_nonfinite_steps = 10
  # The meta-gradient estimator (learned_rules/gradient_estimators.py): `truncated` back-propagation
  # through whole episodes (or, on `streaming`, windows of never-reset streams); `window` and `horizon`
  # set truncations within episodes of `horizon` steps; `open_es` and `pes` need population and std.
  cfg.train.estimator = config_lib.ConfigDict()
  cfg.train.estimator.kind = "truncated"  # truncated | open_es | pes
  cfg.train.estimator.window = 0  # streaming: W steps per meta step (0: task.window)
  cfg.train.estimator.horizon = 0  # streaming: streams restart every T steps (0: never)
  cfg.train.estimator.population = 0
  cfg.train.estimator.std = 0.0
  # The meta-batch: problems whose mean meta-gradient each step follows, each a comma-separated list of
  # `field=value` overrides of this config (net, rule, task, train.batch_size), e.g.
  # ("net.num_hidden=32", "net.num_hidden=96,task.num_snippets=16"); empty: this config's one problem.
  cfg.train.mixture = ()
  # Start from a saved rule instead of the seed's theta: a shipped rule's name ("hetero"), a saved rule
  # (`<path>.json`) or a run directory, of the same rule sizes (its message and fan-in scaling may differ).
  cfg.train.init_rule = ""
  # With rule.error_input from a saved rule without it: the error's weights drawn at this times the
  # scale of the activations' weights (rules.with_error_input), instead of 0.
  cfg.train.error_init = 0.0

  # The device mesh (learned_rules/sharding.py): `batch` devices split the episodes of a meta step
  # (0: every device that `neurons` leaves), `neurons` devices split each network's synapses.
  cfg.mesh = config_lib.ConfigDict()
  cfg.mesh.batch = 0
  cfg.mesh.neurons = 1

  cfg.eval = config_lib.ConfigDict()
  cfg.eval.num_episodes = 512
  cfg.eval.k_values = (1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32)

  configs.apply_variants(cfg, variant, VARIANTS)
  return cfg


def _tiny(cfg):
  cfg.net.num_inputs = cfg.net.num_outputs = 4
  cfg.net.num_hidden = 4
  cfg.net.hidden_layers = (4,)
  cfg.rule.hidden = 8
  cfg.task.num_snippets = 2
  cfg.task.window = 8
  cfg.train.batch_size = 2
  cfg.train.num_steps = 4
  cfg.train.log_every = 2
  cfg.train.checkpoint_every = 2
  cfg.eval.num_episodes = 4
  cfg.eval.k_values = (1, 2, 3)
  cfg.mesh.batch = 1  # its 2 episodes fit one device, whatever the machine has


def _mixture(cfg):
  """A meta-batch of two sizes: the configured network and K, and the network twice as large (inputs,
  outputs and hidden neurons) with twice the K. Put it after the variants that set the sizes."""
  n = cfg.net
  cfg.train.mixture = (
    "",
    f"net.num_inputs={2 * n.num_inputs},net.num_outputs={2 * n.num_outputs},"
    f"net.num_hidden={2 * n.num_hidden},task.num_snippets={2 * cfg.task.num_snippets}",
  )


def _mesh2d(cfg):
  """A 2-D mesh: each network's synapses split over 2 devices, the batch over the rest; a network of
  256 neurons (65,280 synapses). Set `mesh.neurons` to how many devices one network needs."""
  cfg.net.num_hidden = 224
  cfg.mesh.neurons = 2


def _auto(cfg):
  cfg.task.protocol = "auto"
  cfg.task.cue_corruption = 0.25


def _streaming(cfg):
  cfg.task.protocol = "streaming"


def _routing(cfg):
  """Activations are the only memory, as with synapse updates off, but trained fixed weights can send
  particular key bits to particular outputs."""
  cfg.net.synapse_updates = False
  cfg.net.trained_synapses = True


def _topology(name):
  def apply(cfg):
    cfg.net.topology = name
    if name.startswith("layered"):  # one hidden layer: L = 1 (tasks.py, "Latency")
      cfg.task.query_steps = 3  # two scored query steps, as in `full`
      cfg.task.hold_for_latency = True

  return apply


VARIANTS = {
  "tiny": _tiny,
  "auto": _auto,
  "streaming": _streaming,
  "layered": _topology("layered"),
  "layered_feedback": _topology("layered_feedback"),
  "sparse": _topology("sparse"),
  "mesh2d": _mesh2d,
  "mixture": _mixture,
  "routing": _routing,
}
