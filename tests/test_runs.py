"""Run folders: checkpoints, resume after an interruption, NaN handling, the ``proteus train`` CLI,
and the learners on every backend."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from meta_rl.ppo import PPOConfig, make_train
from proteus.checkpoint import Checkpoints, load_policy
from proteus.cli import main
from proteus.runs import NonFiniteLoss, RunSpec, build, compiled_run, load_run, read_metrics, run_chunk, train_run
from sim.wrappers import Wrapper

SMALL = PPOConfig(total_steps=4 * 64 * 10, num_envs=64, num_steps=10, num_minibatches=2, network="gru",
                  hidden=(), core_size=16, lr=1e-3, normalize_obs=False)
SPEC = RunSpec("rl2", "bandit-k5-n10", "auto", 3, SMALL)


@pytest.fixture(scope="module")
def trainer():
    return build(SPEC)  # shared: one compile for every run below


def _params(out):
    return jax.tree.leaves(load_policy(out / "policy")[1])


def test_checkpoint_round_trip(tmp_path, trainer):
    ts = trainer.init(jax.random.key(0))
    ts, _ = run_chunk(trainer, ts, 1)
    ck = Checkpoints(tmp_path / "ck")
    ck.save(1, ts)
    back = ck.restore(trainer.init(jax.random.key(1)))
    ck.close()
    for a, b in zip(jax.tree.leaves(ts), jax.tree.leaves(back)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, trainer):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train_run(SPEC, whole, checkpoint_every=1, progress=False, trainer=trainer)
    first = train_run(SPEC, cut, checkpoint_every=1, progress=False, max_updates=2, trainer=trainer)
    assert first["updates"] == 2 and not first["resumed"]
    second = train_run(SPEC, cut, checkpoint_every=1, progress=False, trainer=trainer)
    assert second["resumed"] and second["updates"] == 4
    for a, b in zip(_params(whole), _params(cut)):
        np.testing.assert_array_equal(a, b)
    m_whole, m_cut = read_metrics(whole), read_metrics(cut)
    assert [r["update"] for r in m_cut] == [1, 2, 3, 4]
    assert [r["loss"] for r in m_cut] == [r["loss"] for r in m_whole]
    for f in ("config.json", "learning_curve.png", "policy/spec.json"):
        assert (whole / f).is_file()
    assert list((whole / "tb").iterdir())
    spec, ts = load_run(whole)
    assert spec == SPEC and int(ts.update) == 4


def test_other_setup_in_the_same_folder_is_refused(tmp_path, trainer):
    train_run(SPEC, tmp_path, checkpoint_every=2, progress=False, max_updates=2, trainer=trainer)
    other = dataclasses.replace(SPEC, config=dataclasses.replace(SMALL, lr=5e-4))
    with pytest.raises(ValueError, match=r"different setup \(config\.lr\)"):
        train_run(other, tmp_path, progress=False)


def test_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a run folder"):
        train_run(SPEC, tmp_path, progress=False)


def test_missing_run_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_run(tmp_path / "nope")


class PoisonAfter(Wrapper):
    """Rewards turn NaN after ``steps`` steps (a diverging simulator or reward bug)."""

    def __init__(self, env, steps):
        super().__init__(env)
        self.steps = steps

    def reset(self, key, params):
        s = self.env.reset(key, params)
        return s.replace(info={**s.info, "poison_t": jnp.zeros(self.batch_shape, jnp.int32)})

    def step(self, state, action):
        info = dict(state.info)
        t = info.pop("poison_t") + 1
        s = self.env.step(state.replace(info=info), action)
        return s.replace(reward=jnp.where(t > self.steps, jnp.nan, s.reward), info={**s.info, "poison_t": t})


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    env = PoisonAfter(sim.make("bandit-k5-n10", batch_size=SMALL.num_envs), steps=25)
    with pytest.raises(NonFiniteLoss, match=r"updates 3-3: training stopped; the last good checkpoint \(update 2\)"):
        train_run(SPEC, tmp_path, checkpoint_every=1, progress=False, trainer=make_train(SMALL, env))
    assert Checkpoints(tmp_path / "checkpoints").latest_step() == 2
    assert all(np.isfinite(x).all() for x in _params(tmp_path))


def test_cli_train_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "rl2", "--env", "bandit-k5-n10", "--steps", "1280", "--num-envs", "64", "--core-size", "16",
          "--out", str(out), "--no-progress"])
    assert "run folder" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["algo"] == "rl2" and cfg["config"]["network"] == "gru" and cfg["config"]["num_steps"] == 10
    assert len(read_metrics(out)) == 2


def test_cli_train_names_the_bad_field(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "ppo", "--env", "pendulum-swingup", "--lr", "-1", "--out", str(tmp_path)])
    assert "error: --lr must be > 0, got -1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "ppo", "--env", "pendulum-swingupp"])
    assert "pendulum-swingup" in capsys.readouterr().err


@pytest.mark.parametrize("algo", ["ppo", "rl2"])
def test_learners_run_on_the_native_backend(algo):
    c = PPOConfig(total_steps=2 * 4 * 8, num_envs=4, num_steps=8, num_minibatches=2,
                  network="gru" if algo == "rl2" else "mlp", hidden=(16,), core_size=16)
    env = sim.make("pendulum-swingup", batch_size=4, mode="trial" if algo == "rl2" else "fresh", backend="native")
    params, metrics = make_train(c, env)(jax.random.key(0))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    assert np.all(np.isfinite(metrics["loss"]))


def test_feed_forward_train_state_round_trips(tmp_path):
    # an MLP policy's carry is an empty dict
    c = PPOConfig(total_steps=64, num_envs=4, num_steps=16, num_minibatches=2)
    trainer = make_train(c, sim.make("point-goal", batch_size=4, mode="fresh"))
    ts = trainer.init(jax.random.key(0))
    ck = Checkpoints(tmp_path / "ck")
    ck.save(0, ts)
    back = ck.restore(ts)
    ck.close()
    assert back.runner.carry == {}
    np.testing.assert_array_equal(jax.tree.leaves(back.params)[0], jax.tree.leaves(ts.params)[0])


def test_chunks_compile_once(trainer):
    # a fresh or restored state (uncommitted, or holding NumPy leaves as MJX's initial data does) and
    # the committed state a chunk returns must hit the same executable
    compiled_run(trainer).clear_cache()
    ts = trainer.init(jax.random.key(0))
    ts = ts.replace(update=np.asarray(ts.update))
    ts, _ = run_chunk(trainer, ts, 1)
    run_chunk(trainer, ts, 1)
    assert compiled_run(trainer)._cache_size() == 1
