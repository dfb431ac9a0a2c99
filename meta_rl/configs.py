"""Learner configs, importable without JAX: the CLI renders, validates and refuses them in well under a
second (``proteus train ppo --lr -1``), before JAX, MuJoCo or any learner module is loaded.

A config is a frozen dataclass whose ``__post_init__`` refuses a bad field with :class:`ConfigError`,
which names the class, the field, the value and what the value must be; the CLI turns that into
``error: --lr must be > 0, got -1.0``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Annotated, Any

import tyro

KINDS = ("mlp", "gru", "lstm", "episodic_lstm")
"""Policy network kinds (:class:`meta_rl.networks.PolicySpec`'s ``kind``); ``episodic_lstm`` is the LSTM
with a reinstatement gate and a DND of cell states keyed by a context cue (Ritter et al. 2018)."""
CORE_NORM_KINDS = ("gru", "lstm")  # the networks whose core can be layer-normalized (PPOConfig.core_norm)


class ConfigError(ValueError):
    """A config field refused at construction: ``str()`` reads ``PPOConfig.lr=inf: must be finite``.

    Attributes:
        owner: the config class's name.
        field: the refused field.
        value: its value.
        why: what the value must be.
    """

    def __init__(self, owner: str, field: str, value: Any, why: str):
        super().__init__(f"{owner}.{field}={value!r}: {why}")
        self.owner, self.field, self.value, self.why = owner, field, value, why


_INT32_MAX = 2**31 - 1
_MAX_WIDTH = 65_536
_INT_BOUNDS = {"total_steps": 2**62, "num_envs": 2**24, "num_steps": 2**20, "update_epochs": 10_000,
               "num_minibatches": 2**24, "core_size": _MAX_WIDTH, "memory_capacity": 2**20}
"""Integer fields and their upper bounds: counters stay far from overflow (update and optimizer-step
counts must also fit int32, checked in :class:`PPOConfig`)."""
_FLOAT_FIELDS = ("lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm", "reward_scale",
                 "init_log_std")
_LOG_STD = (-20.0, 5.0)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check(cfg, ints: dict | None = None, bools=(), floats=(), positive=(), unit=()):
    """Refuse a bad field of ``cfg`` with :class:`ConfigError`: ``ints`` {field: upper bound} integers in
    [1, bound]; ``bools``; ``floats`` finite numbers, of which ``positive`` > 0 and ``unit`` in (0, 1)."""
    def bad(field, why):
        raise ConfigError(type(cfg).__name__, field, getattr(cfg, field), why)

    for f, hi in (ints or {}).items():
        v = getattr(cfg, f)
        if not _is_int(v):
            bad(f, "must be an integer")
        if not 1 <= v <= hi:
            bad(f, f"must lie in [1, {hi:_}]")
    for f in bools:
        if not isinstance(getattr(cfg, f), bool):
            bad(f, "must be True or False")
    for f in floats:
        v = getattr(cfg, f)
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            bad(f, "must be a number")
        if not math.isfinite(v):
            bad(f, "must be finite")
    for f in positive:
        if not getattr(cfg, f) > 0:
            bad(f, "must be > 0")
    for f in unit:
        if not 0 < getattr(cfg, f) < 1:
            bad(f, "must lie in (0, 1)")
    return bad


class _EnvBatchSteps:
    """``steps_per_update`` (``num_envs * num_steps``) and ``num_updates`` (whole updates in
    ``total_steps``) of a learner that steps ``num_envs`` envs ``num_steps`` times per update."""

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update


@dataclasses.dataclass(frozen=True)
class PPOConfig(_EnvBatchSteps):
    """PPO hyperparameters (defaults: a feed-forward agent under domain randomization).

    Attributes:
        total_steps: env steps over the whole run (rounded down to whole updates).
        num_envs: parallel envs (worlds) in the batch.
        num_steps: rollout length per update, per env.
        update_epochs: passes over each rollout.
        num_minibatches: minibatches per pass (split over envs for recurrent policies).
        lr: Adam learning rate.
        anneal_lr: decay the learning rate linearly to 0 over the run.
        gamma: discount.
        gae_lambda: GAE lambda.
        clip_eps: PPO ratio (and value) clip.
        ent_coef: entropy bonus.
        vf_coef: value loss weight.
        max_grad_norm: global gradient norm clip.
        reward_scale: rewards are multiplied by this in the loss (not in reported returns).
        network: ``mlp``, ``gru``, ``lstm`` or ``episodic_lstm`` (the episodic LSTM: needs an env whose
            observation names a context cue ``cue.*`` and an ``episode_start`` flag).
        hidden: MLP torso widths.
        core_size: recurrent core width.
        memory_capacity: entries of the episodic LSTM's DND (cell states of past episodes; the least
            recently written is replaced when full).
        embed: width of a ReLU input embedding before the recurrent core (0: none).
        heads: widths of separate ReLU MLPs for the actor and the critic after the core (empty: linear
            heads on the core's output).
        value_norm: PopArt value normalization (:mod:`meta_rl.popart`): the value loss works on values
            normalized by moving statistics of the value targets, the head rescaled to keep its outputs
            when they move; use with ``reward_scale = 1``.
        value_norm_beta: step of those moving averages, per update.
        core_norm: a layer-normalized recurrent core (``gru``/``lstm`` networks; Ba et al. 2016).
        normalize_obs: running observation normalization inside the policy.
        init_log_std: initial Gaussian log std (continuous actions).
        meta_gradient: learn gamma and gae_lambda online by meta-gradient (Xu et al. 2018): each update,
            the gradient of a held-out objective (half of the envs, discount ``meta_gamma`` and trace
            ``meta_lambda`` fixed) through one SGD step of the PPO loss on the other half moves them;
            ``gamma`` and ``gae_lambda`` are then the starting values.
        meta_lr: Adam learning rate of the meta-parameters (the logits of gamma and lambda).
        meta_gamma: the held-out objective's fixed discount.
        meta_lambda: the held-out objective's fixed GAE lambda.
        loss: an ``epg`` run folder: train with its evolved loss instead of PPO's (``proteus train ppo
            --loss RUN``). The agent then learns as the run's lifetimes did: an update every
            ``update_every`` steps (which must divide ``num_steps``), its Adam step and steps per update,
            over a buffer of its recent experience; ``lr``, ``update_epochs``, ``num_minibatches`` and the
            PPO coefficients are unused. The env must have the run's observation and action sizes.
    """

    total_steps: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 2_000_000
    num_envs: int = 64
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float = 1.0
    network: str = "mlp"
    hidden: tuple[int, ...] = (64, 64)
    core_size: int = 128
    memory_capacity: int = 32
    embed: int = 0
    heads: tuple[int, ...] = ()
    value_norm: bool = False
    value_norm_beta: float = 0.01
    core_norm: bool = False
    normalize_obs: bool = True
    init_log_std: float = -0.5
    meta_gradient: bool = False
    meta_lr: float = 1e-2
    meta_gamma: float = 1.0
    meta_lambda: float = 1.0
    loss: str = ""

    def __post_init__(self):
        bad = _check(self, ints=_INT_BOUNDS, bools=("anneal_lr", "normalize_obs", "meta_gradient", "value_norm", "core_norm"),
                     floats=_FLOAT_FIELDS + ("meta_lr", "meta_gamma", "meta_lambda"),
                     positive=("lr", "clip_eps", "max_grad_norm", "reward_scale", "meta_lr"))
        if not 0 < self.meta_gamma <= 1:
            bad("meta_gamma", "must lie in (0, 1]")
        if not 0 <= self.meta_lambda <= 1:
            bad("meta_lambda", "must lie in [0, 1]")
        if self.meta_gradient:
            if self.num_envs < 2:
                bad("num_envs", "must be >= 2 with meta_gradient (half the envs hold the held-out objective)")
            for f in ("gamma", "gae_lambda"):  # learned as logits: the start must lie strictly inside (0, 1)
                if not 0 < getattr(self, f) < 1:
                    bad(f, "must lie in (0, 1) with meta_gradient (it is learned as a logit)")
        for f in ("ent_coef", "vf_coef"):
            if getattr(self, f) < 0:
                bad(f, "must be >= 0")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must lie in (0, 1]")
        if not 0 <= self.gae_lambda <= 1:
            bad("gae_lambda", "must lie in [0, 1]")
        if not _LOG_STD[0] <= self.init_log_std <= _LOG_STD[1]:
            bad("init_log_std", f"must lie in [{_LOG_STD[0]}, {_LOG_STD[1]}]")
        if not isinstance(self.hidden, tuple) or not all(_is_int(h) and 1 <= h <= _MAX_WIDTH for h in self.hidden):
            bad("hidden", f"must be a tuple of integer widths in [1, {_MAX_WIDTH:_}]")
        if not isinstance(self.heads, tuple) or not all(_is_int(h) and 1 <= h <= _MAX_WIDTH for h in self.heads):
            bad("heads", f"must be a tuple of integer widths in [1, {_MAX_WIDTH:_}]")
        if isinstance(self.value_norm_beta, bool) or not isinstance(self.value_norm_beta, numbers.Real) \
                or not 0 < self.value_norm_beta <= 1:
            bad("value_norm_beta", "must lie in (0, 1]")
        if not _is_int(self.embed) or not 0 <= self.embed <= _MAX_WIDTH:
            bad("embed", f"must be an integer width in [0, {_MAX_WIDTH:_}] (0: no embedding)")
        if self.network not in KINDS:
            bad("network", f"must be one of {KINDS}")
        if self.core_norm and self.network not in CORE_NORM_KINDS:
            bad("core_norm", f"needs a gru or lstm network (layer-normalized core), got network={self.network!r}")
        if self.steps_per_update > _INT32_MAX:
            bad("num_envs", f"times num_steps ({self.steps_per_update:_} transitions per update) must be <= {_INT32_MAX:_}")
        if self.network == "mlp":
            if (self.num_envs * self.num_steps) % self.num_minibatches:
                bad("num_minibatches", f"must divide num_envs * num_steps = {self.num_envs * self.num_steps}")
        elif self.num_envs % self.num_minibatches:
            bad("num_minibatches", f"must divide num_envs = {self.num_envs} (recurrent minibatches are whole sequences)")
        if self.total_steps < self.steps_per_update:
            bad("total_steps", f"is less than one update (num_envs * num_steps = {self.steps_per_update})")
        if not isinstance(self.loss, str):
            bad("loss", "must be a path (an epg run folder) or empty")
        if self.loss and (self.network != "mlp" or self.meta_gradient or self.value_norm):
            bad("loss", "trains a feed-forward policy (network=mlp, no meta_gradient, no value_norm): an evolved "
                        "loss was evolved for one")
        if self.num_updates * self.update_epochs * self.num_minibatches > _INT32_MAX:
            bad("total_steps", f"makes {self.num_updates:_} updates x {self.update_epochs} epochs x "
                               f"{self.num_minibatches} minibatches, more optimizer steps than the int32 counters "
                               f"hold ({_INT32_MAX:_})")


MAML_ESTIMATORS = ("maml", "lvc")
"""Inner-step gradient estimators: ``maml`` (the policy-gradient surrogate of Finn et al. 2017) and
``lvc`` (ProMP's low-variance curvature estimator, Rothfuss et al. 2019)."""


@dataclasses.dataclass(frozen=True)
class GradientMetaConfig:
    """What MAML and ProMP share: tasks, rollouts, the inner policy-gradient step, the advantages and
    the policy (see :class:`MAMLConfig` and :class:`ProMPConfig` for the outer step).

    One meta-iteration: ``meta_batch`` tasks, each with ``rollouts_per_task`` episodes collected before
    and after each of the ``inner_steps`` adaptation steps, all tasks ``vmap``ped in one call.

    Attributes:
        total_steps: env steps over the whole run (rounded down to whole meta-iterations).
        meta_batch: tasks (worlds) per meta-iteration.
        rollouts_per_task: episodes per task for each inner step and for the post-update objective.
        horizon: steps of each rollout, from the episode's start (MAML's ``max_path_length``; at most the
            env's episode length).
        inner_steps: policy-gradient steps of the inner loop (each on freshly collected episodes).
        inner_lr: the inner step size alpha.
        first_order: drop the second-order terms (gradient of the inner gradient), the FOMAML shortcut.
        estimator: inner-step gradient estimator, ``maml`` or ``lvc`` (ProMP's low-variance curvature).
        gamma: discount.
        gae_lambda: GAE lambda over the linear feature baseline (1.0: Monte-Carlo returns minus the baseline).
        hidden: policy MLP widths.
        init_log_std: initial Gaussian log std.
        normalize_obs: running observation normalization inside the policy (statistics updated after
            each meta-iteration from its pre-update rollouts, as PPO does; the agent's inner steps keep
            them fixed).
        adapt_episodes: test time only (training ignores it): episodes the agent collects in a world
            before each inner step (1: a step after every episode; ``rollouts_per_task``: the step as
            trained). ``proteus eval --adapt-episodes K``.
    """

    total_steps: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 2_000_000
    meta_batch: int = 20
    rollouts_per_task: int = 10
    horizon: int = 100
    inner_steps: int = 1
    inner_lr: float = 0.1
    first_order: bool = False
    estimator: str = "maml"
    gamma: float = 0.99
    gae_lambda: float = 1.0
    hidden: tuple[int, ...] = (64, 64)
    init_log_std: float = 0.0
    normalize_obs: bool = False
    adapt_episodes: int = 1

    def __post_init__(self):
        bad = _check(self, ints={"total_steps": 2**62, "meta_batch": 2**20, "rollouts_per_task": 2**20,
                                 "horizon": 2**20, "inner_steps": 100, "adapt_episodes": 1000},
                     bools=("first_order", "normalize_obs"), floats=("inner_lr", "gamma", "gae_lambda", "init_log_std"),
                     positive=("inner_lr",))
        if not 0 < self.gamma <= 1:
            bad("gamma", "must lie in (0, 1]")
        if not 0 <= self.gae_lambda <= 1:
            bad("gae_lambda", "must lie in [0, 1]")
        if not _LOG_STD[0] <= self.init_log_std <= _LOG_STD[1]:
            bad("init_log_std", f"must lie in [{_LOG_STD[0]}, {_LOG_STD[1]}]")
        if self.estimator not in MAML_ESTIMATORS:
            bad("estimator", f"must be one of {MAML_ESTIMATORS}")
        if not isinstance(self.hidden, tuple) or not all(_is_int(h) and 1 <= h <= _MAX_WIDTH for h in self.hidden):
            bad("hidden", f"must be a tuple of integer widths in [1, {_MAX_WIDTH:_}]")
        if self.num_envs > 2**24:
            bad("meta_batch", f"times rollouts_per_task ({self.num_envs:_} envs) must be <= {2**24:_}")
        if self.total_steps < self.steps_per_update:
            bad("total_steps", f"is less than one meta-iteration (meta_batch * rollouts_per_task * horizon * "
                               f"(inner_steps + 1) = {self.steps_per_update:_})")

    @property
    def num_envs(self) -> int:
        """Envs stepped in parallel: every task's rollouts at once."""
        return self.meta_batch * self.rollouts_per_task

    @property
    def steps_per_update(self) -> int:
        """Env steps of one meta-iteration: every task's rollouts before and after each inner step."""
        return self.num_envs * self.horizon * (self.inner_steps + 1)

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update


@dataclasses.dataclass(frozen=True)
class MAMLConfig(GradientMetaConfig):
    """MAML for RL (Finn et al. 2017): an inner policy-gradient step per task, a TRPO outer step on
    the return after adaptation, second-order gradients through the inner step.

    Attributes:
        (the shared fields: see :class:`GradientMetaConfig`)
        max_kl: TRPO trust region: mean KL between the adapted policies before and after the step.
        cg_iters: conjugate-gradient iterations of the TRPO solve.
        cg_damping: damping added to the KL Hessian-vector products.
        ls_steps: backtracking line-search steps.
        ls_backtrack: line-search step shrink factor.
    """

    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-3
    ls_steps: int = 15
    ls_backtrack: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        bad = _check(self, ints={"cg_iters": 1000, "ls_steps": 100}, floats=("max_kl", "cg_damping", "ls_backtrack"),
                     positive=("max_kl",), unit=("ls_backtrack",))
        if self.cg_damping < 0:
            bad("cg_damping", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class MAESNConfig(MAMLConfig):
    """MAESN (Gupta et al. 2018): model-agnostic exploration with structured noise.

    The policy ``pi(a | s, z)`` reads a latent ``z`` drawn once per episode from a distribution
    ``N(mu_i, sigma_i)`` of each of ``num_tasks`` fixed training tasks. A task's inner step is a
    policy gradient on ``(mu_i, log sigma_i)`` (and on the policy's weights when ``adapt_policy``),
    through ``z = mu + sigma * eps`` with the episode's noise ``eps`` held, with per-dimension step
    sizes that the outer step learns (``learn_step``). The outer step is MAML's TRPO (the fields of
    :class:`MAMLConfig`) on the return after adaptation, plus ``kl_weight`` times the KL of each
    task's pre-update latent to the prior ``N(0, I)``, so that a new task can start from the prior.
    At test time a world starts at the prior and adapts its latent after every ``adapt_episodes``
    episodes.

    Attributes:
        (the shared fields: see :class:`GradientMetaConfig` and :class:`MAMLConfig`)
        latent_dim: size of ``z``.
        num_tasks: fixed training tasks (worlds of the train split drawn once from the run's seed),
            each with its own latent distribution; ``meta_batch`` of them per meta-iteration.
        latent_lr: initial inner step size of ``mu`` and ``log sigma`` (per dimension; learned by the
            outer step when ``learn_step``).
        learn_step: meta-learn the latent step sizes.
        adapt_policy: the inner step also moves the policy's weights (step ``inner_lr``, learned when
            ``learn_step``); by default only the latent adapts (MAESN's structured exploration).
        kl_weight: weight of the pre-update latents' KL to the prior in the outer objective.
        latent_baseline: train the latent-space baseline instead: the same per-task latents and
            latent-conditioned policy, trained by TRPO on the pre-update episodes without an inner
            step (no meta-learned adaptation); at test time the latent adapts with the fixed
            ``latent_lr``.
    """

    latent_dim: int = 2
    num_tasks: int = 50
    latent_lr: float = 5.0
    learn_step: bool = True
    adapt_policy: bool = False
    kl_weight: float = 0.01
    latent_baseline: bool = False

    def __post_init__(self):
        super().__post_init__()
        bad = _check(self, ints={"latent_dim": 256, "num_tasks": 2**20}, floats=("latent_lr", "kl_weight"),
                     positive=("latent_lr",), bools=("learn_step", "adapt_policy", "latent_baseline"))
        if self.kl_weight < 0:
            bad("kl_weight", "must be >= 0")
        if self.meta_batch > self.num_tasks:
            bad("num_tasks", f"must be >= meta_batch ({self.meta_batch}): each meta-iteration draws meta_batch "
                             "distinct training tasks")

    @property
    def phases(self) -> int:
        """Rollout phases per task and meta-iteration: one per inner step plus the post-update one
        (one alone for the latent-space baseline)."""
        return 1 if self.latent_baseline else self.inner_steps + 1

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.horizon * self.phases


@dataclasses.dataclass(frozen=True)
class ProMPConfig(GradientMetaConfig):
    """ProMP (Rothfuss et al. 2019): MAML's structure with the low-variance curvature (LVC) inner
    estimator, and an outer step of several Adam steps on PPO's clipped objective of the adapted
    policies plus a KL penalty that keeps each inner step's policy near the one that sampled its
    episodes (ProMP's eq. 8; see :mod:`meta_rl.promp`).

    Attributes:
        (the shared fields: see :class:`GradientMetaConfig`; ``estimator`` defaults to ``lvc``)
        outer_lr: Adam learning rate of the outer steps.
        outer_steps: Adam steps on each meta-iteration's data (ProMP's ``num_ppo_steps``).
        clip_eps: PPO ratio clip of the outer objective.
        inner_kl_coef: weight of the KL penalty (the reference's ``init_inner_kl_penalty``, 5e-4).
        adaptive_kl: adapt that weight (the reference's runs keep it fixed): it halves when the KL
            falls below ``target_inner_kl / 1.5`` and doubles above ``1.5 * target_inner_kl``.
        target_inner_kl: the KL target of ``adaptive_kl``.
        max_grad_norm: global gradient norm clip of the outer steps.
    """

    estimator: str = "lvc"
    outer_lr: float = 1e-3
    outer_steps: int = 5
    clip_eps: float = 0.3
    inner_kl_coef: float = 5e-4
    adaptive_kl: bool = False
    target_inner_kl: float = 0.01
    max_grad_norm: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check(self, ints={"outer_steps": 1000}, bools=("adaptive_kl",),
               floats=("outer_lr", "clip_eps", "inner_kl_coef", "target_inner_kl", "max_grad_norm"),
               positive=("outer_lr", "clip_eps", "inner_kl_coef", "target_inner_kl", "max_grad_norm"))


@dataclasses.dataclass(frozen=True)
class MFECConfig(_EnvBatchSteps):
    """Model-free episodic control (Blundell et al. 2016): a DND per action holding the best discounted
    return seen from each state, greedy control on the k-nearest-neighbour estimate, ε-exploration.

    Attributes:
        total_steps: env steps over the whole run (rounded down to whole updates).
        num_envs: parallel envs (worlds) in the batch.
        num_steps: steps per env between memory writes; the returns written are those of the
            episodes the segment holds (an episode still running at its end writes its return so far).
        capacity: entries per action's memory (the least recently used is replaced when full).
        key_dim: width of the random projection of the observation that keys the memory.
        k: neighbours averaged for a state the memory has not seen.
        gamma: discount of the returns written.
        epsilon: probability of a uniformly random action while training.
        match_tol: squared key distance under which a state counts as seen (its value is used as is,
            and a write updates it by max instead of adding an entry).
        write_chunk: keys written per batched DND write (bounds the memory a write needs).
    """

    total_steps: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 100_000
    num_envs: int = 8
    num_steps: int = 250
    capacity: int = 50_000
    key_dim: int = 16
    k: int = 11
    gamma: float = 0.99
    epsilon: float = 0.1
    match_tol: float = 1e-8
    write_chunk: int = 256

    def __post_init__(self):
        bad = _check(self, ints={"total_steps": 2**62, "num_envs": 2**20, "num_steps": 2**20, "capacity": 2**26,
                                 "key_dim": _MAX_WIDTH, "k": 2**16, "write_chunk": 2**20},
                     floats=("gamma", "epsilon", "match_tol"))
        if self.k > self.capacity:
            bad("k", f"must be <= capacity = {self.capacity}")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must lie in (0, 1]")
        if not 0 <= self.epsilon <= 1:
            bad("epsilon", "must lie in [0, 1]")
        if self.match_tol < 0:
            bad("match_tol", "must be >= 0")
        if self.total_steps < self.steps_per_update:
            bad("total_steps", f"is less than one update (num_envs * num_steps = {self.steps_per_update})")
        if self.num_updates > _INT32_MAX:
            bad("total_steps", f"makes more updates than the int32 counter holds ({_INT32_MAX:_})")


@dataclasses.dataclass(frozen=True)
class ReplayConfig(_EnvBatchSteps):
    """What the value-based learners with a replay buffer share (:class:`DQNConfig`, :class:`NECConfig`).

    Attributes:
        total_steps: env steps over the whole run (rounded down to whole updates).
        num_envs: parallel envs (worlds) in the batch.
        num_steps: steps per env per update; each update then takes ``grad_steps`` minibatch steps.
        hidden: widths of the ReLU MLP (DQN: the Q-network's torso; NEC: the embedding's).
        lr: Adam learning rate.
        max_grad_norm: global gradient norm clip.
        gamma: discount.
        buffer_size: transitions the replay buffer holds (the oldest is overwritten).
        batch_size: transitions per minibatch.
        grad_steps: minibatch steps per update (``grad_steps * batch_size / (num_envs * num_steps)``
            is the replay ratio).
        learning_starts: env steps collected before the first minibatch step.
        eps_start, eps_end: ε of the ε-greedy behaviour, annealed linearly from ``eps_start`` to
            ``eps_end`` over the first ``eps_decay_steps`` env steps (then held).
        eps_decay_steps: env steps of the anneal (absolute, so runs of any length share the schedule).
    """

    total_steps: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 100_000
    num_envs: int = 8
    num_steps: int = 8
    hidden: tuple[int, ...] = (64, 64)
    lr: float = 1e-3
    max_grad_norm: float = 10.0
    gamma: float = 0.99
    buffer_size: int = 50_000
    batch_size: int = 32
    grad_steps: int = 16
    learning_starts: int = 1_000
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 10_000

    def _check_replay(self, ints: dict | None = None, floats=(), positive=()):
        bad = _check(self, ints={"total_steps": 2**62, "num_envs": 2**20, "num_steps": 2**20, "buffer_size": 2**28,
                                 "batch_size": 2**20, "grad_steps": 2**16, "eps_decay_steps": 2**62, **(ints or {})},
                     floats=("lr", "max_grad_norm", "gamma", "eps_start", "eps_end", *floats),
                     positive=("lr", "max_grad_norm", *positive))
        if not isinstance(self.hidden, tuple) or not all(_is_int(h) and 1 <= h <= _MAX_WIDTH for h in self.hidden):
            bad("hidden", f"must be a tuple of integer widths in [1, {_MAX_WIDTH:_}]")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must lie in (0, 1]")
        for f in ("eps_start", "eps_end"):
            if not 0 <= getattr(self, f) <= 1:
                bad(f, "must lie in [0, 1]")
        if not _is_int(self.learning_starts) or self.learning_starts < 0:
            bad("learning_starts", "must be an integer >= 0")
        if self.batch_size > self.buffer_size:
            bad("batch_size", f"must be <= buffer_size = {self.buffer_size}")
        if self.steps_per_update > self.buffer_size:
            bad("buffer_size", f"must hold one update's transitions (num_envs * num_steps = {self.steps_per_update})")
        if self.total_steps < self.steps_per_update:
            bad("total_steps", f"is less than one update (num_envs * num_steps = {self.steps_per_update})")
        if self.num_updates * self.grad_steps > _INT32_MAX:
            bad("total_steps", f"makes more minibatch steps than the int32 counter holds ({_INT32_MAX:_})")
        return bad


@dataclasses.dataclass(frozen=True)
class DQNConfig(ReplayConfig):
    """DQN with experience replay (Mnih et al. 2015), the value-based baseline of NEC: a Q-network
    trained on one-step targets from a target network, Huber loss, ε-greedy behaviour.

    Attributes:
        (the shared fields: see :class:`ReplayConfig`)
        target_period: minibatch steps between copies of the online network into the target network.
        double: Double DQN targets (van Hasselt et al. 2016): the online network picks the next action,
            the target network values it.
    """

    target_period: int = 500
    double: bool = True

    def __post_init__(self):
        self._check_replay(ints={"target_period": 2**30})
        if not isinstance(self.double, bool):
            raise ConfigError(type(self).__name__, "double", self.double, "must be True or False")


@dataclasses.dataclass(frozen=True)
class NECConfig(ReplayConfig):
    """Neural episodic control (Pritzel et al. 2017): an embedding network keys one DND per action;
    ``Q(s, a)`` is the kernel-weighted mean of the values of the ``k`` nearest keys in action ``a``'s DND.

    Attributes:
        (the shared fields: see :class:`ReplayConfig`; ``hidden`` is the embedding's torso)
        key_dim: width of the embedding (the DND keys).
        capacity: entries per action's DND (the least recently used is replaced when full).
        k: neighbours per lookup.
        delta: the kernel's ``1 / (d² + delta)``.
        n_step: the N of the N-step Q targets (fewer where the episode or the collected segment ends).
        alpha: the tabular learning rate of a write to a key already stored (``v += alpha (Q_N - v)``).
        match_tol: squared key distance under which a written key counts as already stored.
        write_chunk: keys written per batched DND write.
    """

    key_dim: int = 16
    capacity: int = 50_000
    k: int = 50
    delta: float = 1e-3
    n_step: int = 10
    alpha: float = 0.1
    match_tol: float = 1e-8
    write_chunk: int = 256

    def __post_init__(self):
        bad = self._check_replay(ints={"key_dim": _MAX_WIDTH, "capacity": 2**26, "k": 2**16, "n_step": 10_000,
                                       "write_chunk": 2**20},
                                 floats=("delta", "alpha", "match_tol"), positive=("delta",))
        if self.k > self.capacity:
            bad("k", f"must be <= capacity = {self.capacity}")
        if not 0 < self.alpha <= 1:
            bad("alpha", "must lie in (0, 1]")
        if self.match_tol < 0:
            bad("match_tol", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class EPGConfig:
    """Evolved Policy Gradients (Houthooft et al. 2018): a loss network evolved by OpenES. The
    reference's values (openai/EPG) are in brackets.

    One update is one ES generation: ``population`` lifetimes, each a freshly initialised agent in its
    own world that lives ``lifetime_steps`` env steps and every ``update_every`` steps takes
    ``inner_minibatches`` Adam steps on ``(1 - alpha) * L_phi + alpha * L_PPO`` (``alpha``, the PPO
    bootstrap, goes 1 -> 0 over the first ``ppo_anneal`` of the run). A lifetime's fitness is the mean
    return of the episodes its final policy finishes in ``final_steps`` more steps of the same world.

    Attributes:
        total_steps: env steps over the whole run (rounded down to whole generations).
        population: lifetimes per generation, even: antithetic pairs share a world and a random stream
            [8 workers per noise vector].
        sigma: ES noise scale [0.01].
        outer_lr: Adam step of the ES mean, annealed linearly to ``outer_lr_final`` over half the run [1e-2].
        outer_lr_final: [1e-3].
        outer_l2: L2 penalty on the loss parameters [1e-3].
        envs_per_lifetime: parallel envs of the agent's one world [1].
        lifetime_steps: env steps of one lifetime per env [8192].
        update_every: env steps between inner updates [64].
        inner_minibatches: Adam steps per inner update, each on a disjoint random part of the newest
            ``update_every`` rows [2].
        inner_lr: the agent's Adam learning rate [1e-3].
        buffer: rows of experience the loss network reads [512].
        memory: width of the memory vector the loss reads (trained by the inner loop; 0: none) [32].
        ppo_anneal: fraction of the run over which the PPO bootstrap's weight goes 1 -> 0 [1/8].
        final_steps: steps of the final policy whose finished episodes give the fitness [3 episodes].
        hidden: widths of the agent's separate actor and critic MLPs (ReLU) [tanh 64, 64].
        gamma: the PPO bootstrap's discount [0.99].
        gae_lambda: its GAE lambda [0.95].
        clip_eps: its clip range [0.2].
    """

    total_steps: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 100_000_000
    population: int = 64
    sigma: float = 0.01
    outer_lr: float = 1e-2
    outer_lr_final: float = 1e-3
    outer_l2: float = 1e-3
    envs_per_lifetime: int = 1
    lifetime_steps: int = 8192
    update_every: int = 64
    inner_minibatches: int = 2
    inner_lr: float = 1e-3
    buffer: int = 512
    memory: int = 32
    ppo_anneal: float = 0.125
    final_steps: int = 300
    hidden: tuple[int, ...] = (64, 64)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2

    def __post_init__(self):
        bad = _check(self, ints={"total_steps": 2**62, "population": 2**16, "envs_per_lifetime": 2**16,
                                 "lifetime_steps": 2**26, "update_every": 2**16, "inner_minibatches": 2**16,
                                 "buffer": 2**16, "final_steps": 2**26},
                     floats=("sigma", "outer_lr", "outer_lr_final", "outer_l2", "inner_lr", "ppo_anneal", "gamma",
                             "gae_lambda", "clip_eps"),
                     positive=("sigma", "outer_lr", "outer_lr_final", "inner_lr", "clip_eps"))
        if self.population < 2 or self.population % 2:
            bad("population", "must be even and >= 2 (antithetic sampling pairs every noise vector with its negative)")
        if self.lifetime_steps < self.update_every:
            bad("lifetime_steps", f"must be >= update_every ({self.update_every}): a lifetime shorter than one "
                                  "inner update never learns")
        if self.update_every % self.inner_minibatches:
            bad("inner_minibatches", f"must divide update_every ({self.update_every})")
        if self.buffer < self.update_every:
            bad("buffer", f"must hold at least one update's rows (update_every = {self.update_every})")
        if self.buffer < 21:  # conv 1 (k 6, s 5) must give conv 2 (k 4) 4 rows: 6 + 3 * 5
            bad("buffer", "must be >= 21: the loss network's convolutions (k 6 s 5, then k 4 s 2) need 21 rows")
        if not _is_int(self.memory) or not 0 <= self.memory <= _MAX_WIDTH:
            bad("memory", f"must be an integer in [0, {_MAX_WIDTH:_}]")
        if self.outer_l2 < 0:
            bad("outer_l2", "must be >= 0")
        if not 0 <= self.ppo_anneal <= 1:
            bad("ppo_anneal", "must lie in [0, 1]")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must lie in (0, 1]")
        if not 0 <= self.gae_lambda <= 1:
            bad("gae_lambda", "must lie in [0, 1]")
        if not isinstance(self.hidden, tuple) or not all(_is_int(h) and 1 <= h <= _MAX_WIDTH for h in self.hidden):
            bad("hidden", f"must be a tuple of integer widths in [1, {_MAX_WIDTH:_}]")
        if self.total_steps < self.steps_per_update:
            bad("total_steps", f"is less than one generation (population * envs_per_lifetime * (lifetime_steps + "
                               f"final_steps) = {self.steps_per_update:_})")

    @property
    def num_envs(self) -> int:
        """Envs stepped in parallel: every lifetime's at once."""
        return self.population * self.envs_per_lifetime

    @property
    def steps_per_update(self) -> int:
        """Env steps of one generation: every lifetime and its final episodes."""
        return self.num_envs * (self.lifetime_steps + self.final_steps)

    @property
    def num_updates(self) -> int:
        """Generations."""
        return self.total_steps // self.steps_per_update

    @property
    def updates_per_lifetime(self) -> int:
        """Inner updates in one lifetime."""
        return self.lifetime_steps // self.update_every
