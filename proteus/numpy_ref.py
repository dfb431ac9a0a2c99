"""Plain NumPy versions of the pure-JAX trial envs: the baseline of ``proteus bench env``.

Each steps a batch of trial envs in a Python loop over time, vectorized over the batch with NumPy,
with the same semantics as ``sim.make(ENV, batch_size=B)`` under a uniform random policy: rewards,
RL² observation (previous action, reward, done), episode auto-reset, world resampling at trial end.
"""

from __future__ import annotations

import numpy as np

import sim


def _trial_obs(base, action_enc, reward, done):
    return np.concatenate([base, action_enc, reward[:, None], done[:, None].astype(np.float32)], 1)


def run_bandit(num_arms: int, pulls: int, batch: int, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    p = rng.random((batch, num_arms), dtype=np.float32)
    episode = np.zeros(batch, np.int64)
    rows = np.arange(batch)
    ones = np.ones((batch, 1), np.float32)
    eye = np.eye(num_arms, dtype=np.float32)
    total = 0.0
    for _ in range(steps):
        a = rng.integers(0, num_arms, batch)
        r = (rng.random(batch, dtype=np.float32) < p[rows, a]).astype(np.float32)
        obs = _trial_obs(ones, eye[a], r, np.ones(batch, bool))
        episode += 1
        trial_done = episode >= pulls
        if trial_done.any():
            p[trial_done] = rng.random((int(trial_done.sum()), num_arms), dtype=np.float32)
            episode[trial_done] = 0
        total += float(r.sum()) + float(obs[0, 0])
    return total


def run_mdp(episodes: int, batch: int, steps: int, S: int = 10, A: int = 5, H: int = 10, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)

    def sample(n):
        g = rng.gamma(1.0, size=(n, S, A, S)).astype(np.float32)
        return g / g.sum(-1, keepdims=True), (1.0 + rng.standard_normal((n, S, A))).astype(np.float32)

    P, R = sample(batch)
    cum = P.cumsum(-1)
    s = np.zeros(batch, np.int64)
    t = np.zeros(batch, np.int64)
    episode = np.zeros(batch, np.int64)
    rows = np.arange(batch)
    eye_s, eye_a = np.eye(S, dtype=np.float32), np.eye(A, dtype=np.float32)
    total = 0.0
    for _ in range(steps):
        a = rng.integers(0, A, batch)
        r = R[rows, s, a] + rng.standard_normal(batch).astype(np.float32)
        u = rng.random(batch, dtype=np.float32)
        s = np.minimum((u[:, None] > cum[rows, s, a]).sum(-1), S - 1)
        t += 1
        done = t >= H
        if done.any():
            s[done], t[done] = 0, 0
            episode += done
            trial_done = episode >= episodes
            if trial_done.any():
                n = int(trial_done.sum())
                P[trial_done], R[trial_done] = sample(n)
                cum[trial_done] = P[trial_done].cumsum(-1)
                episode[trial_done] = 0
        obs = _trial_obs(eye_s[s], eye_a[a], r, done)
        total += float(r.sum()) + float(obs[0, 0])
    return total


def run_point(family: str, batch: int, steps: int, seed: int = 0) -> float:
    env = sim.make(f"point-{family}").unwrapped
    mag_r, ang_r = env.ranges.values()
    rng = np.random.default_rng(seed)

    def sample(n):
        # union-of-intervals sampling of the training split, as SplitRange.sample does
        def draw(rg):
            ivs = rg.intervals("train")
            lens = np.array([hi - lo for lo, hi in ivs])
            i = rng.choice(len(ivs), size=n, p=lens / lens.sum())
            lo = np.array([iv[0] for iv in ivs])[i]
            return lo + rng.random(n) * lens[i]

        mag, ang = draw(mag_r), np.deg2rad(draw(ang_r))
        return (mag[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1)).astype(np.float32)

    target = sample(batch)
    pos = np.zeros((batch, 2), np.float32)
    t = np.zeros(batch, np.int64)
    episode = np.zeros(batch, np.int64)
    K = sim.entry(f"point-{family}").episodes_per_trial
    total = 0.0
    for _ in range(steps):
        a = rng.uniform(-1.0, 1.0, (batch, 2)).astype(np.float32)
        v = np.clip(a, -1.0, 1.0)
        pos = pos + 0.1 * v
        r = -np.linalg.norm((pos if family == "goal" else v) - target, axis=1)
        t += 1
        done = t >= env.episode_length
        obs = _trial_obs(pos, a, r, done)
        if done.any():
            pos[done], t[done] = 0.0, 0
            episode += done
            trial_done = episode >= K
            if trial_done.any():
                target[trial_done] = sample(int(trial_done.sum()))
                episode[trial_done] = 0
        total += float(r.sum()) + float(obs[0, 0])
    return total


def runner(env_id: str):
    """A ``(batch, steps) -> checksum`` NumPy loop for a registered pure-JAX env, or None."""
    e = sim.entry(env_id)
    if e.backends != ("jax",):
        return None
    base = e.factory("jax")
    family = base.family
    if family == "bandit":
        return lambda b, s: run_bandit(base.num_arms, e.episodes_per_trial, b, s)
    if family == "tabular-mdp":
        return lambda b, s: run_mdp(e.episodes_per_trial, b, s, base.num_states, base.num_actions, base.episode_length)
    if family in ("point-goal", "point-vel"):
        return lambda b, s: run_point(base.task, b, s)
    return None
