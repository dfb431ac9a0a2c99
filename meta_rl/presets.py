"""Presets per learner and env family: the config overrides ``proteus train`` starts from.

Every field can still be overridden on the command line; the values here are the ones the README's
results were produced with. Each learner's registry entry (:mod:`meta_rl.learners`) points at its
preset function here (``env_id -> dict`` of config fields).
"""

from __future__ import annotations

from sim.registry import entry


def _family(env_id: str) -> str:
    entry(env_id)  # unknown ids fail here, naming the known ones
    for prefix in ("bandit", "mdp", "point", "recurring"):
        if env_id.startswith(prefix):
            return prefix
    return "robot"


def default_config(algo: str, env_id: str, **overrides):
    """The registered learner ``algo``'s preset config for ``env_id``, with ``overrides`` applied."""
    from meta_rl import learners

    try:
        learner = learners.get(algo)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    return learner.default_config(env_id, **overrides)


def ppo_preset(env_id: str) -> dict:
    """Feed-forward PPO under domain randomization: one preset for every env."""
    entry(env_id)  # unknown ids fail here, naming the known ones
    return dict(total_steps=2_000_000, num_envs=64, num_steps=128, network="mlp", hidden=(64, 64), reward_scale=0.1)


def rl2_preset(env_id: str) -> dict:
    """RL² per env family (bandits, tabular MDPs, robots and point tasks)."""
    fam = _family(env_id)
    e = entry(env_id)
    if fam == "bandit":
        # trials of n pulls; the rollout covers whole trials up to 100 steps (longer ones are
        # carried across rollouts with their hidden state)
        n = e.episodes_per_trial
        # Long trials (n >= 100): gamma = 1 is the objective (the undiscounted trial return): at
        # 0.99 a pull 100 steps ahead counts 0.37 and the agent under-explores. The value of an
        # exploratory pull shows up many steps later, so long GAE traces (lambda 0.95) carry it:
        # at n = 100, k = 5, lambda 0.3 plateaued at 93.6% of Gittins, lambda 0.95 reached 97.5%
        # in half the steps. Short trials (n = 10) learn best with the paper's low-variance
        # traces (gamma 0.99, lambda 0.3: k = 10 reached 99.2% of Gittins at 3M steps, against
        # 97.6% with gamma 1, lambda 0.95).
        # With 50 arms and n = 100 an entropy bonus of 0.01 held the policy near uniform over
        # ~7 arms (2 nats) for 15M steps; 0.001 learns twice as fast. At n = 500 it is the other
        # way round: 0.001 collapsed the entropy to 0.05 nats and stalled at ~350 (17M steps),
        # 0.01 reached 397 at 40M steps.
        long = n >= 100
        base = dict(total_steps=30_000_000 if long else 3_000_000, num_envs=256, num_steps=min(n, 100),
                    network="gru", hidden=(), ent_coef=0.001 if n == 100 and e.info["arms"] >= 50 else 0.01,
                    gamma=1.0 if long else 0.99, gae_lambda=0.95 if long else 0.3, normalize_obs=False)
        if long:
            # Issue 19 (`proteus bench learn`, README "RL² time-to-result"): on bandit-k10-n100 a
            # smaller, better-shaped network wins per wall-clock second. A 64-unit ReLU embedding,
            # GRU-64 and separate 64-unit actor and critic heads run at about 38k steps/s on one core
            # (GRU-128 with linear heads: 31-35k) and learn more per step; PopArt keeps the value
            # targets O(1) (the old preset scaled rewards by 10 / n: without it the value loss swamped
            # the clipped gradient and n >= 100 barely learned); 8 minibatches and lr 2e-3 take more,
            # larger steps per env step. 95% of Gittins after 149 s; the old preset was at 94.6% after
            # 480 s. At n = 500 lr 1e-3 is better (k = 50, 40M steps: 414.4 against 402.4 at 2e-3; an
            # entropy bonus of 0.03 instead: 357.0).
            base.update(core_size=64, embed=64, heads=(64,), value_norm=True, reward_scale=1.0,
                        num_minibatches=8, lr=2e-3 if n < 500 else 1e-3)
        else:
            base.update(core_size=128, lr=1e-3, reward_scale=1.0)
    elif fam == "mdp":
        # ent 0.01 collapses to a near-deterministic policy early. A 128-unit GRU learns about as
        # much per step as the paper's 256 (n = 10, 10M steps: 116.6 vs 120 training return) at
        # 4.7x the steps per second on CPU, so it gets further in any wall-clock budget.
        # lr 3e-3 learns faster than 1e-3 (n = 10, 70M steps: 133.3 vs 128.2 evaluated; 10M
        # steps: 121.1 vs 116.6 training return; 1e-2: 118.7 at 8.4M, 3e-4: 108 at 6.6M). The
        # bandits keep 1e-3: with 3e-3, k = 5, n = 100 scored 77.7 after 60M steps (1e-3: 77.9
        # after 30M), and k = 50 got to its plateau sooner (80.3 vs 77.4 at 30M) but no higher
        # (80.9 at 90M vs 80.8 at 60M). The MDP keeps climbing for a long time: at lr 3e-3 on
        # n = 10 a 70M-step run scored 133.3 and a 140M-step run 150.3 (PSRL 137.9), hence the
        # 140M default (about 35 min on one CPU core). Longer trials need more: n = 25 was level with
        # PSRL after 140M steps (406.4 vs 408.8) and clearly above it after 280M (426.1); n = 10 gained
        # little from 280M (151.0 vs 150.3).
        base = dict(total_steps=140_000_000, num_envs=256, num_steps=100, network="gru", hidden=(),
                    core_size=128, lr=3e-3, ent_coef=0.05, gamma=0.99, gae_lambda=0.3, normalize_obs=False,
                    reward_scale=0.1)
    elif fam == "recurring":
        # a lifetime of 20 bandit episodes (200 pulls) is one trial; the rollout holds half of it (the
        # carry, and the episodic LSTM's memory in it, crosses the two halves). An LSTM, so that RL² is
        # the episodic LSTM without its memory (the issue's baseline); the short bandit episodes'
        # settings otherwise (gamma 0.99 and low-variance traces, as bandit-k*-n10).
        base = dict(total_steps=20_000_000, num_envs=256, num_steps=100, network="lstm", hidden=(), core_size=128,
                    lr=1e-3, ent_coef=0.01, gamma=0.99, gae_lambda=0.3, normalize_obs=False, reward_scale=1.0)
    else:
        base = dict(total_steps=2_000_000, num_envs=64, num_steps=128, network="gru", hidden=(64,),
                    core_size=128, lr=3e-4, ent_coef=0.0, gamma=0.99, gae_lambda=0.95, reward_scale=0.1)
    return base


def maml_preset(env_id: str) -> dict:
    """MAML-TRPO per env family. The paper's settings (alpha 0.1, 20 rollouts per task, 100-step
    horizon, KL 0.01) with a smaller network (64 x 64 instead of 100 x 100) for 2 CPU cores."""
    fam = _family(env_id)
    if fam == "point":
        return dict(total_steps=8_000_000, meta_batch=20, rollouts_per_task=20, horizon=100, inner_lr=0.1,
                    hidden=(64, 64))
    if fam in ("bandit", "mdp"):
        raise ValueError(f"maml needs continuous actions; {env_id} has discrete ones")
    # robots: 20 tasks x 10 rollouts of 100 steps (the MAML paper used 40 x 20). The native backend keeps
    # a MuJoCo model and data per env (about 25 MB for the cheetah, most of it MuJoCo's default arena),
    # so 40 x 20 = 800 envs took 20 GB, too close to this 24 GB machine's memory.
    # The rollouts cover the whole episode where it is short enough (the agent adapts on whole episodes):
    # cheetah and ant episodes are 200 steps, the reacher's 100; pendulum and cart-pole (250) use the first 100.
    horizon = 200 if env_id.startswith(("cheetah", "ant")) else 100
    # Robots need normalized observations (the cheetah's velocities are large) and a smaller initial
    # action noise than the reference's std 1 (on [-1, 1] actions it mostly saturates and pays the
    # control cost): without these MAML did not learn cheetah-dir in 16M steps; with them the
    # post-adaptation return passed 400 by 16M.
    return dict(total_steps=20_000_000, meta_batch=20, rollouts_per_task=10, horizon=horizon, inner_lr=0.1,
                hidden=(64, 64), normalize_obs=True, init_log_std=-0.7)


def promp_preset(env_id: str) -> dict:
    """ProMP: MAML's preset (:func:`maml_preset`) with ProMP's outer step (Adam 1e-3, 5 steps, clip 0.3)."""
    return dict(maml_preset(env_id), outer_lr=1e-3, outer_steps=5, clip_eps=0.3)


def maesn_preset(env_id: str) -> dict:
    """MAESN: MAML's preset (:func:`maml_preset`: TRPO, 64 x 64, the paper's 100-step horizon) with a
    2-D latent per training task (MAESN's), 50 fixed training tasks (each latent in every other
    meta-batch of 20), the latent alone adapting, from an initial step of 5.

    On point-arc the latent's step of 0.5 (the PyTorch port's default) barely adapted: a post-update
    gain of -6 to +2 over the first 12 meta-iterations, against +4 to +10 with 5 (and +100 for the
    weights' step, adapt_policy, which then leaves the latents at the prior: mean |mu| 0.03 after
    130 iterations)."""
    return dict(maml_preset(env_id), latent_dim=2, num_tasks=50, latent_lr=5.0, adapt_policy=False)


def mfec_preset(env_id: str) -> dict:
    """MFEC: the paper's k = 11 and ε-greedy control; memories sized for a 2-core run. Discrete actions
    only (the learner refuses a continuous env when it is built)."""
    entry(env_id)  # unknown ids fail here, naming the known ones
    return dict(total_steps=100_000, num_envs=8, num_steps=250, capacity=50_000, key_dim=16, k=11, gamma=0.99,
                epsilon=0.1)


def dqn_preset(env_id: str) -> dict:
    """DQN: the shared replay settings (:class:`meta_rl.configs.ReplayConfig`) sized for 100k-step runs
    on 2 cores; discrete actions only (the learner refuses a continuous env when it is built)."""
    entry(env_id)  # unknown ids fail here, naming the known ones
    return dict(total_steps=100_000, num_envs=8, num_steps=8, hidden=(64, 64), lr=1e-3, buffer_size=50_000,
                batch_size=32, grad_steps=16, learning_starts=1_000, eps_decay_steps=10_000, target_period=500)


def nec_preset(env_id: str) -> dict:
    """NEC: DQN's replay ratio (4 env steps per minibatch step of 32) and ε schedule, so the two compare
    on equal terms; the paper's k = 50, delta = 1e-3 and N = 100. The N-step targets need segments
    longer than N to reach N steps for most transitions, so each update collects 128 steps per env
    (then 256 minibatch steps). Measured on cartpole-balance-discrete at 20k steps: with 8-step segments
    (targets of at most 8 steps) NEC did not learn (training return ~92, flat, at lr 1e-3, 1e-4, 1e-5);
    128-step segments with N = 50 reached 109, with N = 100 153 (DQN: 119).

    A memory of 5,000 entries per action, not the 50,000 a 100k-step run could fill: on the cart-pole
    at 100k steps it scored 388 on held-out worlds against 305 (1,000: 386, 2,000: 377, 10,000: 330),
    at 50k 323 against 306, and runs 15x faster (the kNN's top-k over the memory dominates); at 20k
    it scored 267 against 301, where the larger memory is not yet full. Smaller memories forget the
    values the early, poor policies left behind sooner."""
    base = {k: v for k, v in dqn_preset(env_id).items() if k != "target_period"}
    return dict(base, num_steps=128, grad_steps=256, key_dim=16, capacity=5_000, k=50, delta=1e-3, n_step=100,
                alpha=0.1)


def episodic_lstm_preset(env_id: str) -> dict:
    """The episodic LSTM: RL²'s preset for the env with the episodic core (:class:`meta_rl.networks.
    EpisodicLSTMCore`) and a memory of 32 cell states (a lifetime's 20 episodes fit)."""
    return dict(rl2_preset(env_id), network="episodic_lstm", memory_capacity=32)


def epg_preset(env_id: str) -> dict:
    """EPG per env family: the reference's lifetime (8,192 steps, an inner update every 64 on a 512-row
    buffer) and outer ES (sigma 0.01, Adam 1e-2 -> 1e-3), with 64 lifetimes per generation vmapped in one
    call. The fitness is the final policy's return over 3 episodes."""
    fam = _family(env_id)
    if fam == "point":
        return dict(total_steps=100_000_000, population=64, lifetime_steps=8192, final_steps=300)
    if fam in ("bandit", "mdp", "recurring"):
        return dict(total_steps=20_000_000, population=64, lifetime_steps=8192, final_steps=3 * 100)
    # robots (native MuJoCo: each env owns a model): 16 lifetimes, 3 episodes of up to 200 steps at the end
    return dict(total_steps=20_000_000, population=16, lifetime_steps=8192, final_steps=600)
