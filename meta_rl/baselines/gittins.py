"""Gittins indices of a Bernoulli arm with a Beta posterior, by calibration.

For discount ``gamma``, the index of posterior ``Beta(a, b)`` is the constant per-step reward ``lam`` of a
retirement option that makes playing on and retiring equally good (Gittins 1979). For a grid of
``lam`` values we solve the optimal-stopping recursion

    V(a, b) = max(lam / (1 - gamma), mu (1 + gamma V(a+1, b)) + (1 - mu) gamma V(a, b+1)),  mu = a/(a+b)

backwards over posterior states, level by level (``a + b`` fixed), and read each state's index at the
``lam`` where continuing stops being better than retiring, interpolating linearly between grid points.

Approximation: the recursion is truncated ``depth`` levels below the deepest state needed, where the
value is replaced by ``max(lam, mu) / (1 - gamma)`` (no more learning). With ``depth >= 5 / (1-gamma)``
levels (capped), the truncated tail weighs less than ``gamma^depth`` of the value.
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=32)
def gittins_table(gamma: float, max_pulls: int, grid: int = 1001, max_depth: int = 600) -> np.ndarray:
    """Index table ``G[a, b]`` (float32, shape ``[max_pulls + 3, max_pulls + 3]``) for ``a, b >= 1``.

    ``G[1 + successes, 1 + failures]`` is the index of an arm under a uniform prior. Entries with
    ``a + b > max_pulls + 2`` or ``a, b < 1`` are unused (NaN).
    """
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    if max_pulls < 1:
        raise ValueError(f"max_pulls must be >= 1, got {max_pulls}")
    need = max_pulls + 2  # deepest level a + b that a trial of max_pulls pulls can reach
    depth = min(int(math.ceil(5.0 / (1.0 - gamma))), max_depth)
    top = need + depth
    lam = np.linspace(0.0, 1.0, grid)
    retire = lam / (1.0 - gamma)
    table = np.full((need + 1, need + 1), np.nan, np.float64)

    a = np.arange(1, top, dtype=np.float64)
    mu = a / top
    v_next = np.maximum(lam[None, :], mu[:, None]) / (1.0 - gamma)  # row i: state (a=i+1, b=top-i-1)
    for s in range(top - 1, 1, -1):
        a = np.arange(1, s, dtype=np.float64)
        mu = (a / s)[:, None]
        cont = mu * (1.0 + gamma * v_next[1:s]) + (1.0 - mu) * gamma * v_next[0 : s - 1]
        if s <= need:
            diff = cont - retire[None, :]  # decreasing in lam; > 0 at lam=0, <= 0 at lam=1
            j = np.clip((diff >= 0).sum(1) - 1, 0, grid - 2)
            rows = np.arange(len(a))
            d0, d1 = diff[rows, j], diff[rows, j + 1]
            frac = np.where(d0 - d1 > 0, d0 / np.maximum(d0 - d1, 1e-300), 0.0)
            idx = lam[j] + frac * (lam[1] - lam[0])
            ai = a.astype(int)
            table[ai, s - ai] = idx
        v_next = np.maximum(cont, retire[None, :])
    return table.astype(np.float32)
