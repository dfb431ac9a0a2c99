"""The installed environment: the pinned set of constraints.txt, coherent with pyproject's ranges.

dm_control's suite and a Brax physics env must run next to the project (a user's card may mix them
in), and the versions installed must be the ones constraints.txt pins, so a drifting environment is
caught here rather than by a confusing failure elsewhere.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"


def _canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: pathlib.Path = CONSTRAINTS) -> dict[str, str]:
    """A constraints file as {canonical name: version}; every line that is not a comment is name==version."""
    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() and version.strip(), f"{path.name}:{n}: not a name==version pin: {line!r}"
        pins[_canonical(name.strip())] = version.strip()
    return pins


def test_dm_control_suite_loads_and_steps():
    from dm_control import suite

    env = suite.load("cartpole", "balance", task_kwargs={"random": 0})
    ts = env.reset()
    action = np.zeros(env.action_spec().shape)
    t0 = env.physics.data.time
    for _ in range(5):
        ts = env.step(action)
    assert env.physics.data.time > t0
    assert np.isfinite(ts.reward) and 0.0 <= ts.reward <= 1.0
    assert all(np.isfinite(v).all() for v in ts.observation.values())


def test_brax_mjx_env_steps():
    import brax.envs

    env = brax.envs.get_environment("inverted_pendulum", backend="mjx")  # brax + mujoco-mjx + jax together

    @jax.jit
    def reset_and_step(key):
        s0 = env.reset(key)
        return s0, env.step(s0, jnp.ones(env.action_size))

    s0, s1 = reset_and_step(jax.random.PRNGKey(0))
    assert s1.obs.shape == (env.observation_size,) and np.isfinite(np.asarray(s1.obs)).all()
    assert not np.allclose(np.asarray(s1.pipeline_state.q), np.asarray(s0.pipeline_state.q))  # the physics moved


def test_installed_versions_match_constraints():
    installed = {_canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    pins = _pins()
    wrong = [f"{name}=={want} (installed: {installed.get(name, 'missing')})"
             for name, want in sorted(pins.items()) if installed.get(name) != want]
    assert not wrong, (f"the environment differs from {CONSTRAINTS}: " + "; ".join(wrong)
                       + ". Rebuild it with: bash scripts/setup.sh")
    # MuJoCo 4's split wheels would shadow the pinned mujoco's files even with every pin matched
    stray = sorted(n for n in installed if n.startswith("mujoco") and n not in pins)
    assert not stray, f"MuJoCo packages not in {CONSTRAINTS.name}: {', '.join(stray)}. Rebuild: bash scripts/setup.sh"


def test_constraints_pin_every_direct_dependency_inside_pyproject_ranges():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        name = _canonical(req.name)
        assert name in pins, f"pyproject.toml depends on {spec!r}, which {CONSTRAINTS.name} does not pin"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{CONSTRAINTS.name} pins {name}=={pins[name]}, outside pyproject.toml's range {spec!r}")
        assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), (
            f"pyproject.toml's {spec!r} has no upper bound: the next release could break the install")


@pytest.mark.parametrize("line", ["mujoco>=3.17", "mujoco = 3.17.0"])
def test_a_malformed_pin_is_named(tmp_path, line):
    bad = tmp_path / "constraints.txt"
    bad.write_text("# header\nnumpy==2.4.6\n" + line + "\n")
    with pytest.raises(AssertionError, match=r"constraints.txt:3: not a name==version pin"):
        _pins(bad)
