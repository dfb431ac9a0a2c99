"""Policies: a :class:`PolicySpec`, flax networks (MLP, GRU, LSTM) and distrax action heads.

The Policy contract (DESIGN.md): ``PolicySpec`` + params pytree + ``init_carry(batch)`` +
``apply(params, carry, obs) -> (carry, dist, value)``. Export reads exactly this.

Layout of one step, whatever the kind::

    obs ─► normalize (running stats in params["obs_norm"], when spec.normalize_obs)
        ─► MLP torso (tanh, ``spec.hidden``) ─► [GRU | LSTM core of ``spec.core_size``]
        ─► policy head (logits, or Gaussian mean + state-independent log std) and value head

Structured observations (a :class:`sim.core.Dict` space, ``spec.obs_parts``): one torso per part, an
MLP for a vector part, a small CNN (:data:`CNN_LAYERS`: 8×8 stride 4 then 4×4 stride 2, ReLU, then a dense projection) for
an H×W×C uint8 image part (scaled to [0, 1]); their features are concatenated in the parts' order
and go on to the core and heads. Vector parts are normalized, each with its own statistics.

Continuous actions: the Gaussian lives in normalized units ``u``; the env receives
``offset + scale * clip(u, -1, 1)`` (:meth:`Policy.env_action`), with scale and offset from the
action space's bounds. The deterministic action is the Gaussian's mean (the categorical's mode).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from meta_rl import popart
from meta_rl.configs import CORE_NORM_KINDS, KINDS  # the config validates against the same tuples
from sim.core import Box, Dict, Discrete, Env
from sim.normalize import RunningStats, normalize

PART_KINDS = ("vector", "image")
CNN_LAYERS = ((16, 8, 4), (32, 4, 2))
"""The image torso's convolutions, ``(filters, kernel, stride)``: Nature-DQN's first two layers at half
width (a 64x64 image becomes 8x8x32). On this project's 2-core CPU it trains 2.7x faster per image
than two stride-2 3x3 layers (16 and 32 filters, measured fwd+bwd at batch 32)."""
CONTEXT_PREFIX, BOUNDARY_NAME = "cue.", "episode_start"
"""The observation names the episodic LSTM reads its context cue and episode boundaries from."""
REINSTATE_BIAS = -4.0
"""Initial bias of the episodic LSTM's reinstatement gate (its kernel starts at zero): sigmoid(-4) = 0.018,
closed at init, so the network starts as a plain LSTM and learns to open the gate."""



@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """Everything that defines a policy's function (its weights live in the params pytree).

    Attributes:
        kind: ``mlp`` (feed-forward), ``gru`` or ``lstm`` (recurrent).
        obs_names: one name per observation element, in order.
        action_names: continuous: one name per actuator (joint order); discrete: one per choice.
        discrete: categorical over ``action_names`` instead of a Gaussian.
        hidden: widths of the tanh MLP torso.
        core_size: width of the recurrent core (ignored for ``mlp``).
        action_low, action_high: env action bounds (continuous only).
        normalize_obs: normalize observations with running statistics inside the policy.
        init_log_std: initial log standard deviation of the Gaussian.
        obs_clip: clip of normalized observations.
        obs_parts: for a dict observation, ``(name, shape, kind)`` per part (``kind``: ``vector`` or
            ``image``), in order; ``obs_names`` then names the vector parts' elements as
            ``part.element``. Empty for a flat vector observation.
        context_names: ``episodic_lstm``: the observation elements (consecutive) that key its memory
            (the context cue).
        boundary_name: ``episodic_lstm``: the observation element that is 1 on an episode's first step
            (the end of the previous episode: its last cell state is written then).
        memory_capacity: ``episodic_lstm``: entries of its DND.
        embed: width of a ReLU input embedding between the torso and the core (0: none), as
            purejaxrl's ``ppo_rnn`` (issue 19: a candidate for faster RL²).
        heads: widths of separate ReLU MLPs for the actor and the critic after the core (empty: both
            read the core's output directly through one linear layer each).
        value_norm: PopArt (:mod:`meta_rl.popart`): the value head predicts a normalized value and
            the policy reports ``sigma * v + mu`` from the statistics in ``params["value_norm"]``.
        core_norm: a layer-normalized recurrent core (Ba et al. 2016; :class:`LayerNormGRUCell`,
            :class:`LayerNormLSTMCell`): ``gru`` and ``lstm`` only.
    """

    kind: str
    obs_names: tuple[str, ...]
    action_names: tuple[str, ...]
    discrete: bool
    hidden: tuple[int, ...] = (64, 64)
    core_size: int = 128
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    normalize_obs: bool = True
    init_log_std: float = -0.5
    obs_clip: float = 10.0
    obs_parts: tuple = ()
    context_names: tuple[str, ...] = ()
    boundary_name: str = ""
    memory_capacity: int = 32
    embed: int = 0
    heads: tuple[int, ...] = ()
    value_norm: bool = False
    core_norm: bool = False

    def __post_init__(self):
        parts = tuple((str(n), tuple(int(d) for d in shape), str(k)) for n, shape, k in self.obs_parts)
        object.__setattr__(self, "obs_parts", parts)
        for n, shape, k in parts:
            if k not in PART_KINDS:
                raise ValueError(f"PolicySpec obs part {n!r}: kind must be one of {PART_KINDS}, got {k!r}")
            if (k == "image") != (len(shape) == 3) or (k == "vector" and len(shape) != 1):
                raise ValueError(f"PolicySpec obs part {n!r}: a vector is 1-D and an image H x W x C, got {k} {shape}")
        if self.kind not in KINDS:
            raise ValueError(f"PolicySpec.kind must be one of {KINDS}, got {self.kind!r}")
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"PolicySpec.hidden widths must be >= 1, got {self.hidden}")
        if any(int(h) < 1 for h in self.heads):
            raise ValueError(f"PolicySpec.heads widths must be >= 1, got {self.heads}")
        if self.embed < 0:
            raise ValueError(f"PolicySpec.embed must be >= 0 (0: no embedding), got {self.embed}")
        if self.core_norm and self.kind not in CORE_NORM_KINDS:
            raise ValueError(f"PolicySpec.core_norm: a layer-normalized core is a gru or lstm, not {self.kind!r}")
        if self.recurrent and self.core_size < 1:
            raise ValueError(f"PolicySpec.core_size must be >= 1, got {self.core_size}")
        if self.kind == "episodic_lstm":
            self.context_slice  # refuses names the observation lacks
            if self.memory_capacity < 1:
                raise ValueError(f"PolicySpec.memory_capacity must be >= 1, got {self.memory_capacity}")
            if self.structured:
                raise ValueError("PolicySpec: episodic_lstm reads a flat vector observation")
        if not self.discrete and not (len(self.action_low) == len(self.action_high) == len(self.action_names)):
            raise ValueError("PolicySpec: continuous actions need one low/high bound per action name")

    @property
    def recurrent(self) -> bool:
        return self.kind != "mlp"

    @property
    def context_slice(self) -> tuple[int, int, int]:
        """``(first, end, boundary)``: where the context cue and the episode-start flag sit in the
        observation (``episodic_lstm``); refuses names the observation lacks, naming them."""
        names = list(self.obs_names)
        missing = [n for n in (*self.context_names, self.boundary_name) if n not in names]
        if not self.context_names or missing:
            raise ValueError(f"PolicySpec: episodic_lstm needs context cue and episode-start names in the observation; "
                             f"missing {missing or 'context_names'} (observation: {', '.join(names[:8])}...)")
        first = names.index(self.context_names[0])
        if tuple(names[first:first + len(self.context_names)]) != tuple(self.context_names):
            raise ValueError(f"PolicySpec: the context cue {self.context_names} must be consecutive observation elements")
        return first, first + len(self.context_names), names.index(self.boundary_name)

    @property
    def obs_dim(self) -> int:
        """Vector elements read (all the observation for a flat one; the vector parts for a dict)."""
        return len(self.obs_names)

    @property
    def structured(self) -> bool:
        """The observation is a dict of parts (:attr:`obs_parts`)."""
        return bool(self.obs_parts)

    def select_obs(self, obs: Any) -> Any:
        """The part of an env observation this policy reads: the first :attr:`obs_dim` elements of a
        flat one (a trial env appends the RL² inputs after the base observation), or its own parts
        of a dict one."""
        if self.structured:
            return {n: obs[n] for n, _, _ in self.obs_parts}
        return obs[..., : self.obs_dim]

    def dummy_obs(self, batch: int = 1) -> Any:
        """Zero observations of the spec's layout (for initialization and tracing)."""
        if self.structured:
            return {n: jnp.zeros((batch,) + shape, jnp.uint8 if k == "image" else jnp.float32)
                    for n, shape, k in self.obs_parts}
        return jnp.zeros((batch, self.obs_dim), jnp.float32)

    def create_stats(self):
        """Fresh observation statistics: one over a flat observation, one per vector part of a dict."""
        if self.structured:
            return {n: RunningStats.create(shape[0]) for n, shape, k in self.obs_parts if k == "vector"}
        return RunningStats.create(self.obs_dim)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def action_scale(self) -> np.ndarray:
        lo, hi = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return np.where(np.isfinite(hi - lo), (hi - lo) / 2, 1.0).astype(np.float32)

    @property
    def action_offset(self) -> np.ndarray:
        lo, hi = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return np.where(np.isfinite(hi + lo), (hi + lo) / 2, 0.0).astype(np.float32)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PolicySpec":
        d = dict(d)
        for k in ("obs_names", "action_names", "hidden", "action_low", "action_high", "context_names", "heads"):
            if k in d:
                d[k] = tuple(d[k])
        d["obs_parts"] = tuple((n, tuple(shape), k) for n, shape, k in d.get("obs_parts", ()))
        return cls(**d)

    @classmethod
    def for_env(cls, env: Env, kind: str, **kw) -> "PolicySpec":
        """The spec matching ``env``'s named observation and action spaces."""
        obs, act = env.observation_space, env.action_space
        if isinstance(obs, Dict):
            parts = []
            for n, sp in obs.items():
                if sp.is_vector:
                    parts.append((n, sp.shape, "vector"))
                elif len(sp.shape) == 3:
                    parts.append((n, sp.shape, "image"))
                else:
                    raise ValueError(f"{env.id}: obs part {n!r} is {sp.describe()}; policies read 1-D float vectors "
                                     "and H x W x C images")
            names = obs.vector_names
            kw = {**kw, "obs_parts": tuple(parts)}
        elif isinstance(obs, Box) and obs.is_vector:
            names = obs.names
            if kind == "episodic_lstm":  # the context cue (cue.*) and the episode-start flag, by name
                kw = {**kw, "context_names": tuple(n for n in names if n.startswith(CONTEXT_PREFIX)),
                      "boundary_name": BOUNDARY_NAME}
        else:
            raise ValueError(f"{env.id}: policies need a 1-D float Box or a Dict observation space, got {obs.describe()}")
        if isinstance(act, Discrete):
            return cls(kind=kind, obs_names=names, action_names=act.names, discrete=True, **kw)
        return cls(kind=kind, obs_names=names, action_names=act.names, discrete=False,
                   action_low=act.low, action_high=act.high, **kw)


class ActorCritic(nn.Module):
    """One step of the network: ``(carry, x) -> (carry, head_out, value)``.

    ``stage="torso"`` returns the torso's features of ``x`` only (no carry: feed-forward, so a whole
    ``[T, B]`` sequence of images goes through the CNN in one batch); ``stage="core"`` takes those
    features as ``x`` and runs the rest. Together they compute exactly ``stage="all"``."""

    spec: PolicySpec

    @nn.compact
    def __call__(self, carry, x, stage: str = "all"):
        s = self.spec
        orth = nn.initializers.orthogonal
        raw = None
        if s.kind == "episodic_lstm":  # the cue and the boundary flag as observed (before any torso)
            first, end, boundary = s.context_slice
            raw = (x[..., first:end], x[..., boundary])
        if stage == "core":
            pass  # x holds the torso's features
        elif s.structured:  # one torso per part, features concatenated
            feats = []
            for name, _, kind in s.obs_parts:
                v = x[name]
                if kind == "image":
                    v = v.astype(jnp.float32) / 255.0
                    for j, (f, k, st) in enumerate(CNN_LAYERS):
                        v = nn.relu(nn.Conv(f, (k, k), strides=(st, st), kernel_init=orth(np.sqrt(2)),
                                            name=f"{name}_conv_{j}")(v))
                    v = v.reshape(v.shape[:-3] + (-1,))
                    v = nn.relu(nn.Dense(s.hidden[-1] if s.hidden else 64, kernel_init=orth(np.sqrt(2)),
                                         name=f"{name}_proj")(v))
                else:
                    for i, w in enumerate(s.hidden):
                        v = nn.tanh(nn.Dense(w, kernel_init=orth(np.sqrt(2)), name=f"{name}_torso_{i}")(v))
                feats.append(v)
            x = jnp.concatenate(feats, -1)
        else:
            for i, w in enumerate(s.hidden):
                x = nn.tanh(nn.Dense(w, kernel_init=orth(np.sqrt(2)), name=f"torso_{i}")(x))
        if stage == "torso":
            return x
        if s.embed:
            x = nn.relu(nn.Dense(s.embed, kernel_init=orth(np.sqrt(2)), name="embed")(x))
        if s.kind == "gru":
            cell = LayerNormGRUCell if s.core_norm else nn.GRUCell
            h, x = cell(s.core_size, name="core")(carry["h"], x)
            carry = {"h": h}
        elif s.kind == "lstm":
            cell = LayerNormLSTMCell if s.core_norm else nn.LSTMCell
            (c, h), x = cell(s.core_size, name="core")((carry["c"], carry["h"]), x)
            carry = {"c": c, "h": h}
        elif s.kind == "episodic_lstm":
            carry, x = EpisodicLSTMCore(s.core_size, name="core")(carry, x, raw)
        xa = xv = x
        for i, w in enumerate(s.heads):
            xa = nn.relu(nn.Dense(w, kernel_init=orth(np.sqrt(2)), name=f"actor_{i}")(xa))
            xv = nn.relu(nn.Dense(w, kernel_init=orth(np.sqrt(2)), name=f"critic_{i}")(xv))
        value = nn.Dense(1, kernel_init=orth(1.0), name="value")(xv)[..., 0]
        if s.discrete:
            out = nn.Dense(s.action_dim, kernel_init=orth(0.01), name="logits")(xa)
        else:
            mean = nn.Dense(s.action_dim, kernel_init=orth(0.01), name="mean")(xa)
            log_std = self.param("log_std", nn.initializers.constant(s.init_log_std), (s.action_dim,))
            out = (mean, jnp.broadcast_to(log_std, mean.shape))
        return carry, out, value


def _normed_gates(x, h, gates: int, features: int):
    """``(LN_x(W x), LN_h(U h))``, each ``[..., gates, features]``: the input and recurrent projections
    (no biases; LeCun-normal and orthogonal kernels, as flax's cells) layer-normalized per gate, with a
    scale and shift per gate and unit. Called inside a cell's compact ``__call__`` (its submodules)."""
    def norm(name):
        return nn.LayerNorm(epsilon=1e-5, reduction_axes=-1, feature_axes=(-2, -1), name=name)

    wx = nn.Dense(gates * features, use_bias=False, name="input")(x).reshape(x.shape[:-1] + (gates, features))
    uh = nn.Dense(gates * features, use_bias=False, kernel_init=nn.initializers.orthogonal(), name="recurrent")(h)
    return norm("input_norm")(wx), norm("recurrent_norm")(uh.reshape(h.shape[:-1] + (gates, features)))


class LayerNormGRUCell(nn.Module):
    """A GRU with layer-normalized gate pre-activations (Ba et al. 2016, section 3.2, as for the LSTM),
    the input and the recurrent projections normalized separately, per gate::

        [r_x, z_x, n_x] = LN_x(W x)       [r_h, z_h, n_h] = LN_h(U h)      (each LN per gate)
        r = σ(r_x + r_h)    z = σ(z_x + z_h)    n = tanh(n_x + r ⊙ n_h)    h' = (1 - z) ⊙ n + z ⊙ h

    The norms' shifts take the biases' place. Kernels are initialized as flax's ``GRUCell`` (LeCun
    normal inputs, orthogonal recurrence). Same carry and call signature as ``nn.GRUCell``."""

    features: int

    @nn.compact
    def __call__(self, h, x):
        wx, uh = _normed_gates(x, h, 3, self.features)
        r = nn.sigmoid(wx[..., 0, :] + uh[..., 0, :])
        z = nn.sigmoid(wx[..., 1, :] + uh[..., 1, :])
        n = jnp.tanh(wx[..., 2, :] + r * uh[..., 2, :])
        h = (1.0 - z) * n + z * h
        return h, h


class LayerNormLSTMCell(nn.Module):
    """An LSTM with layer normalization (Ba et al. 2016, eq. 20-22): the input and recurrent gate
    projections normalized separately per gate, and the cell normalized before the output::

        [i, f, g, o] = LN_x(W x) + LN_h(U h)     c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)    h' = σ(o) ⊙ tanh(LN_c(c'))

    Same carry ``(c, h)`` and call signature as ``nn.LSTMCell``."""

    features: int

    @nn.compact
    def __call__(self, carry, x):
        c, h = carry
        wx, uh = _normed_gates(x, h, 4, self.features)
        g = wx + uh
        i, fg, gg, o = (g[..., j, :] for j in range(4))
        c = nn.sigmoid(fg) * c + nn.sigmoid(i) * jnp.tanh(gg)
        h = nn.sigmoid(o) * jnp.tanh(nn.LayerNorm(epsilon=1e-5, name="cell_norm")(c))
        return (c, h), h


class EpisodicLSTMCore(nn.Module):
    """The episodic LSTM (Ritter et al. 2018): an LSTM whose cell gains ``r_t ⊙ tanh(c_ep)``, the cell
    state stored the last time this context was seen, through a reinstatement gate ``r_t``.

    The carry holds the LSTM's ``c`` and ``h``, a DND (:mod:`meta_rl.dnd`, one per batch row, keys the
    context cue, values cell states: ``mem.keys``, ``mem.values``, ``mem.stamps``, ``mem.clock``), the
    running episode's cue ``ctx`` and ``ctx_valid`` (an episode has started). On an episode's first step
    (the boundary flag) the previous episode's last cell state is written under its cue
    (:func:`meta_rl.dnd.write_one`; a cue seen before has its entry replaced), then the new cue is
    looked up (:func:`meta_rl.dnd.read_nearest`, the nearest stored cue). Every step::

        i, f, g, o = split(W x + U h)        r = sigmoid(W_r [x, h, m])   (initialized as flax's LSTMCell)
        c' = σ(f) c + σ(i) tanh(g) + r ⊙ tanh(c_ep)        h' = σ(o) tanh(c')

    where ``m = exp(-d²)`` says how close the retrieved cue is (1 for the same cue; 0 with nothing
    stored), so the gate can tell a recurring task from a novel one. ``W_r`` starts at zero and its bias
    at :data:`REINSTATE_BIAS`: the gate is closed at init. Gradients reach the stored cell states
    (the DND is differentiable), so backpropagation through time runs across episodes through it.
    """

    size: int

    @nn.compact
    def __call__(self, carry, x, raw):
        from meta_rl import dnd

        cue, start = raw
        start = start > 0.5
        mem = dnd.Memory(carry["mem"]["keys"], carry["mem"]["values"], carry["mem"]["stamps"], carry["mem"]["clock"])
        write = start & (carry["ctx_valid"] > 0.5)
        mem = jax.vmap(dnd.write_one)(mem, carry["ctx"], carry["c"], write)
        ctx = jnp.where(start[:, None], cue, carry["ctx"])
        c_ep, d2 = jax.vmap(dnd.read_nearest)(mem, ctx)
        match = jnp.exp(-jnp.minimum(d2, 50.0))  # exp(-50) ~ 0 where nothing is stored (d2 = inf)
        h, c = carry["h"], carry["c"]
        z = nn.Dense(4 * self.size, name="ih")(x) + nn.Dense(4 * self.size, use_bias=False, kernel_init=nn.initializers.orthogonal(), name="hh")(h)
        i, f, g, o = jnp.split(z, 4, -1)
        r = nn.sigmoid(nn.Dense(self.size, kernel_init=nn.initializers.zeros,
                                bias_init=nn.initializers.constant(REINSTATE_BIAS), name="reinstate")(
            jnp.concatenate([x, h, match[:, None]], -1)))
        c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g) + r * jnp.tanh(c_ep)
        h = nn.sigmoid(o) * jnp.tanh(c)
        carry = {"c": c, "h": h, "ctx": ctx, "ctx_valid": jnp.maximum(carry["ctx_valid"], start.astype(jnp.float32)),
                 "mem": {"keys": mem.keys, "values": mem.values, "stamps": mem.stamps, "clock": mem.clock}}
        return carry, h


class Policy:
    """A :class:`PolicySpec` made callable: pure functions over an explicit params pytree.

    ``params = {"net": flax params, "obs_norm": RunningStats}``.
    """

    def __init__(self, spec: PolicySpec):
        self.spec = spec
        self.net = ActorCritic(spec)

    # equal specs make equal policies, so jitted functions taking a Policy as static data are
    # reused for policies loaded separately (e.g. the same run evaluated twice)
    def __eq__(self, other):
        return isinstance(other, Policy) and other.spec == self.spec

    def __hash__(self):
        return hash(self.spec)

    def init_carry(self, batch: int) -> dict[str, jax.Array]:
        """The carry at trial start, a dict named by state (the ONNX inputs ``<name>_in``): zeros
        ``{"h": [B, core]}`` for GRU, ``{"c": .., "h": ..}`` for LSTM, ``{}`` for MLP (stateless)."""
        s = self.spec
        z = jnp.zeros((batch, s.core_size), jnp.float32)
        if s.kind == "gru":
            return {"h": z}
        if s.kind == "lstm":
            return {"c": z, "h": z}
        if s.kind == "episodic_lstm":
            m, d = s.memory_capacity, len(s.context_names)
            mem = {"keys": jnp.zeros((batch, m, d), jnp.float32), "values": jnp.zeros((batch, m, s.core_size), jnp.float32),
                   "stamps": jnp.full((batch, m), -1, jnp.int32), "clock": jnp.zeros((batch,), jnp.int32)}
            return {"c": z, "h": z, "ctx": jnp.zeros((batch, d), jnp.float32), "ctx_valid": jnp.zeros((batch,), jnp.float32),
                    "mem": mem}
        return {}

    def init(self, key: jax.Array) -> dict:
        net = self.net.init(key, self.init_carry(1), self.spec.dummy_obs(1))
        params = {"net": net, "obs_norm": self.spec.create_stats()}
        if self.spec.value_norm:
            params["value_norm"] = popart.ValueNorm.create()
        return params

    def normalize(self, params, obs):
        if self.spec.structured:  # vector parts as float32 (normalized when asked); images as they are
            obs = {n: obs[n] if k == "image" else obs[n].astype(jnp.float32) for n, _, k in self.spec.obs_parts}
            return normalize(params["obs_norm"], obs, self.spec.obs_clip) if self.spec.normalize_obs else obs
        if not self.spec.normalize_obs:
            return obs.astype(jnp.float32)
        return normalize(params["obs_norm"], obs, self.spec.obs_clip)

    @property
    def split_torso(self) -> bool:
        """A recurrent policy over image parts: sequences are replayed as one batched pass of the
        torso (:meth:`features`) and a scan of the rest (:meth:`apply_features`), since a CNN called
        once per step inside a scan (and its gradient) runs many times slower on a CPU."""
        return self.spec.recurrent and self.spec.kind != "episodic_lstm" and any(
            k == "image" for _, _, k in self.spec.obs_parts)

    def features(self, params, obs) -> jax.Array:
        """The torso's features of ``obs`` (any leading batch shape): the part of :meth:`apply` that
        does not depend on the carry."""
        return self.net.apply(params["net"], None, self.normalize(params, obs), stage="torso")

    def apply_features(self, params, carry, feats) -> tuple[Any, distrax.Distribution, jax.Array]:
        """:meth:`apply` from the torso's features (:meth:`features`)."""
        return self._heads(params, *self.net.apply(params["net"], carry, feats, stage="core"))

    def apply(self, params, carry, obs) -> tuple[Any, distrax.Distribution, jax.Array]:
        """One step over a batch: ``obs`` [B, obs_dim] (or a dict of parts [B, ...]) -> (carry,
        distribution over ``u``, value [B])."""
        return self._heads(params, *self.net.apply(params["net"], carry, self.normalize(params, obs)))

    def _heads(self, params, carry, out, value):
        if self.spec.value_norm:  # the head predicts a normalized value
            value = value * params["value_norm"].sigma + params["value_norm"].mu
        if self.spec.discrete:
            return carry, distrax.Categorical(logits=out), value
        mean, log_std = out
        return carry, distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)), value

    def env_action(self, u: jax.Array) -> jax.Array:
        """Map a sample ``u`` of the distribution to env units (identity for discrete)."""
        if self.spec.discrete:
            return u.astype(jnp.int32)
        return jnp.asarray(self.spec.action_offset) + jnp.asarray(self.spec.action_scale) * jnp.clip(u, -1.0, 1.0)

    def deterministic(self, dist: distrax.Distribution) -> jax.Array:
        """The deterministic action in env units (the exported one)."""
        return self.env_action(dist.mode())


def reset_carry(carry, done: jax.Array, fresh):
    """Replace the carry by ``fresh`` where ``done`` [B] (the recurrent-carry reset between trials)."""
    return jax.tree.map(lambda f, c: jnp.where(done.reshape(done.shape + (1,) * (c.ndim - 1)), f, c), fresh, carry)
