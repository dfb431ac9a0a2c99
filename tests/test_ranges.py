"""SplitRange: validation naming the bad value, sampling over unions of intervals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randomization.ranges import SplitRange


def test_sampling_covers_each_split_uniformly():
    r = SplitRange("mass", train=(1.0, 3.0), interp=(1.5, 2.0), extrap=((0.2, 0.5), (3.5, 4.0)))
    key = jax.random.key(0)
    train = np.asarray(r.sample(key, "train", (20000,)))
    assert ((train >= 1.0) & (train <= 3.0)).all() and not ((train > 1.5) & (train < 2.0)).any()
    # uniform over [1, 1.5] ∪ [2, 3]: a third of the mass on the first piece
    assert abs((train < 1.5).mean() - 1 / 3) < 0.015
    extrap = np.asarray(r.sample(key, "extrap", (20000,)))
    assert (((extrap >= 0.2) & (extrap <= 0.5)) | ((extrap >= 3.5) & (extrap <= 4.0))).all()
    assert abs((extrap < 1).mean() - 0.375) < 0.015
    interp = np.asarray(r.sample(key, "interp", (1000,)))
    assert ((interp >= 1.5) & (interp <= 2.0)).all()
    assert bool(r.contains(train, "train").all()) and not bool(r.contains(train, "extrap").any())


def test_log_uniform():
    r = SplitRange("damping", train=(0.01, 1.0), dist="log_uniform")
    x = np.asarray(r.sample(jax.random.key(1), "train", (20000,)))
    assert abs((x < 0.1).mean() - 0.5) < 0.015  # half the mass per decade


def test_shared_range_is_the_same_in_every_split():
    r = SplitRange("radius", train=(0.2, 0.5))
    assert r.shared and r.intervals("extrap") == [(0.2, 0.5)]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(train=(2.0, 1.0)), r"mass: train range has low 2.0 >= high 1.0"),
        (dict(train=(1.0, 2.0), interp=(0.5, 1.5)), r"mass: interp range \(0.5, 1.5\) must lie strictly inside"),
        (dict(train=(1.0, 2.0), extrap=((1.5, 3.0),)), r"mass: extrap range \(1.5, 3.0\) overlaps the train range"),
        (dict(train=(0.0, 1.0), dist="log_uniform"), r"mass: log_uniform needs positive bounds, got low 0.0"),
        (dict(train=(1.0, 2.0), dist="cauchy"), r"mass: unknown distribution 'cauchy'; expected one of uniform, log_uniform, normal, discrete"),
        (dict(train=(1.0, float("inf"))), r"mass: train range .* must be finite"),
    ],
)
def test_bad_ranges_are_named(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SplitRange("mass", **kwargs)


def test_missing_split_and_unknown_split():
    r = SplitRange("mass", train=(1.0, 2.0), interp=(1.2, 1.4))
    with pytest.raises(ValueError, match="mass: no 'extrap' range declared"):
        r.sample(jax.random.key(0), "extrap")
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        r.intervals("holdout")


def test_normal_is_truncated_to_each_split():
    r = SplitRange("gain", train=(0.5, 1.5), interp=(0.9, 1.1), extrap=((1.5, 2.0),), dist="normal")
    train = np.asarray(r.sample(jax.random.key(0), "train", (40000,)))
    assert bool(r.contains(train, "train").all())
    # centred on 1 with std 0.25, the hole removed: symmetric, most mass near the hole's edges
    assert abs(train.mean() - 1.0) < 0.01 and abs(np.median(np.abs(train - 1.0)) - 0.25) < 0.05
    extrap = np.asarray(r.sample(jax.random.key(1), "extrap", (40000,)))
    assert ((extrap >= 1.5) & (extrap <= 2.0)).all() and (extrap < 1.75).mean() > 0.7  # the tail thins out


def test_discrete_draws_integers_per_split():
    r = SplitRange("delay", train=(0.0, 3.0), extrap=((3.0, 5.0),), dist="discrete")
    train = np.asarray(r.sample(jax.random.key(0), "train", (30000,)))
    assert set(np.unique(train).tolist()) == {0.0, 1.0, 2.0}
    np.testing.assert_allclose(np.bincount(train.astype(int)) / 30000, [1 / 3] * 3, atol=0.015)
    assert set(np.unique(np.asarray(r.sample(jax.random.key(1), "extrap", (1000,)))).tolist()) == {3.0, 4.0}


def test_bounds_are_data_one_compile_serves_every_bound():
    r = SplitRange("mass", (1.0, 3.0), interp=(1.8, 2.2), extrap=((0.5, 1.0), (3.0, 4.0)))
    calls = []

    @jax.jit
    def draw(bounds, key):
        calls.append(1)  # runs only when tracing
        return r.sample(key, "train", (4000,), bounds)

    default = draw(r.bounds(), jax.random.key(0))
    np.testing.assert_array_equal(default, r.sample(jax.random.key(0), "train", (4000,)))
    moved = {**r.bounds(), "train": jnp.asarray([10.0, 30.0]), "interp": jnp.asarray([18.0, 22.0])}
    x = np.asarray(draw(moved, jax.random.key(1)))
    assert len(calls) == 1  # new bounds, no retrace
    assert x.min() >= 10.0 and x.max() <= 30.0 and not ((x > 18.0) & (x < 22.0)).any()
    assert r.with_bounds(moved).train == (10.0, 30.0)
    with pytest.raises(ValueError, match=r"mass: bounds\['train'\] must have shape \(2,\)"):
        r.sample(jax.random.key(0), "train", (), {**r.bounds(), "train": jnp.zeros(3)})
