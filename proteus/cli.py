"""The ``proteus`` command line (tyro)."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tyro


@dataclasses.dataclass(frozen=True)
class Envs:
    """List registered envs: backend, spaces, task family, trial shape and randomized parameters."""

    verbose: bool = False
    """Also print every split's ranges."""

    def run(self) -> None:
        from proteus.envs import print_envs

        print_envs(verbose=self.verbose)


@dataclasses.dataclass(frozen=True)
class BenchBaselines:
    """Bandit and tabular-MDP baseline tables beside Duan et al. 2016 (RL²), Tables 1 and 2."""

    tasks: int = 2000
    """Bandit tasks per (n, k) setting."""
    mdp_tasks: int = 1000
    """MDPs per n setting."""
    pulls: tuple[int, ...] = (10, 100, 500)
    """Bandit trial lengths n."""
    arms: tuple[int, ...] = (5, 10, 50)
    """Bandit arm counts k."""
    episodes: tuple[int, ...] = (10, 25, 50, 75, 100)
    """MDP episodes per trial."""
    tune: bool = False
    """Re-tune the bandit baselines' hyperparameters on tuning tasks first (else use the stored ones)."""
    json: Path | None = None
    """Write every row (name, value, paper value, ratio) to this file."""

    def run(self) -> None:
        from proteus.bench import bench_baselines

        for name, v in (("tasks", self.tasks), ("mdp-tasks", self.mdp_tasks)):
            if v < 2:
                raise SystemExit(f"error: --{name} must be >= 2, got {v}")
        bench_baselines(self.tasks, self.mdp_tasks, self.pulls, self.arms, self.episodes, self.tune, self.json)


@dataclasses.dataclass(frozen=True)
class BenchEnv:
    """Env-steps/s of the jitted, vmapped env (random policy) against a plain NumPy loop of the same env."""

    env: str = "bandit-k10-n100"
    """Registered env id."""
    batch: int = 4096
    """Envs stepped in parallel."""
    steps: int = 1000
    """Steps per timed rollout."""
    repeats: int = 3
    """Timed repetitions (best is reported)."""
    json: Path | None = None
    """Write the rows to this file."""

    def run(self) -> None:
        from proteus.bench import bench_env

        bench_env(self.env, self.batch, self.steps, self.repeats, self.json)


@dataclasses.dataclass(frozen=True)
class BenchSim:
    """Physics steps/s of a batch of randomized MuJoCo robots: open-loop mujoco.rollout, one rollout call
    per control step, the Proteus native backend (jitted closed loop with an MLP policy), MJX, and
    EnvPool's jitted loop on the same model when envpool is installed (PROTEUS_EXTRAS=bench); ratios
    are medians over interleaved rounds."""

    env: str = "pendulum-swingup"
    """Registered MuJoCo robot env id."""
    batch: int = 64
    """Envs (each its own randomized model)."""
    steps: int = 200
    """Control steps per timed run."""
    mjx_steps: int = 20
    """Control steps for the (slow on CPU) MJX run."""
    json: Path | None = None
    """Write the rows to this file."""

    def run(self) -> None:
        from proteus.bench import bench_sim

        bench_sim(self.env, self.batch, self.steps, self.mjx_steps, json_path=self.json)


BACKENDS = ("auto", "jax", "native", "mjx")
"""What ``--backend`` takes (``auto``: the env's first backend; for a MuJoCo robot, native unless MJX
measured faster for a tiny contact-free model: :func:`sim.registry.resolve_backend`)."""


class UsageError(ValueError):
    """A refused command-line value; the message names the flag and the value (``--lr must be finite, got inf``)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """What every learner's ``proteus train NAME`` takes besides its own config (see :func:`train_command`)."""

    env: str = "pendulum-swingup"
    """Registered env id (proteus envs)."""
    out: Path | None = None
    """Run folder (default runs/LEARNER-ENV-sSEED)."""
    backend: str = "auto"
    """auto, jax, native or mjx."""
    seed: int = 0
    """Seed: same seed, same run."""
    checkpoint_every: int | None = None
    """Updates between checkpoints (default: about 50 per run)."""
    progress: bool = True
    """Show the progress bar."""

    learner_name = ""  # set on each learner's subclass

    def check(self) -> None:
        """Refuse a bad ``--seed``, ``--backend``, ``--checkpoint-every`` or ``--env`` (:class:`UsageError`)
        before anything is built or written."""
        from sim.registry import entry

        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.checkpoint_every is not None and (not _is_int(self.checkpoint_every)
                                                  or not 1 <= self.checkpoint_every <= 2**31 - 1):
            raise UsageError(f"--checkpoint-every must be an integer >= 1 (updates between checkpoints; omit it "
                             f"for about 50 per run), got {self.checkpoint_every!r}")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        backends = entry(self.env).backends  # an unknown env raises naming the closest ids and the known ones
        if self.backend != "auto" and self.backend not in backends:
            raise UsageError(f"--backend {self.backend}: {self.env} runs on {', '.join(backends)} (or auto), "
                             f"got {self.backend!r}")

    def run(self) -> None:
        from proteus.runs import RunSpec, train_run

        from sim.registry import resolve_backend

        out = self.out or Path("runs") / f"{self.learner_name}-{self.env}-s{self.seed}"
        # the backend auto chose is recorded, so a resume steps on it on any machine
        backend = resolve_backend(self.env, self.backend)
        spec = RunSpec(self.learner_name, self.env, backend, self.seed, self.config)  # type: ignore[attr-defined]
        summary = train_run(spec, out, self.checkpoint_every, progress=self.progress)
        final = summary["final_return"]
        final = "n/a" if final is None else f"{final:.3f}"
        print(f"run folder: {summary['out']}  ({summary['updates']} updates, {summary['env_steps']:,} env steps, "
              f"final return {final}, {summary['wall_s']:.0f} s)")


def train_command(name: str) -> type:
    """The ``proteus train NAME`` options of a registered learner: :class:`TrainOptions` plus the
    learner's config dataclass as flags (built from the registry, so a new learner needs no CLI edit)."""
    from meta_rl.learners import get

    learner = get(name)
    doc = (f"Train {learner.name}: {learner.description}\n\nThe run folder (config, metrics, TensorBoard, "
           "checkpoints, policy) goes to --out. Defaults come from the learner's preset for --env; run the same "
           "command again to resume a killed run from its last checkpoint.")
    cls = dataclasses.make_dataclass(
        f"Train{''.join(p.capitalize() for p in learner.name.replace('-', '_').split('_'))}",
        [("config", tyro.conf.OmitArgPrefixes[_unchecked(learner.config)],
          dataclasses.field(default_factory=_unchecked(learner.config)))],
        bases=(TrainOptions,), frozen=True, namespace={"learner_name": learner.name, "__doc__": doc},
    )
    return cls


@functools.cache
def _unchecked(config: type) -> type:
    """``config`` without its ``__post_init__`` validation: what tyro fills from the flags, so a refused
    value reaches :func:`_checked` (which names the flag) instead of tyro's generic error box."""
    return dataclasses.make_dataclass(config.__name__, [], bases=(config,), frozen=True,
                                      namespace={"__post_init__": lambda self: None, "__doc__": config.__doc__,
                                                 "__module__": config.__module__})


def _fields(c: Any, config: type) -> dict:
    return {f.name: getattr(c, f.name) for f in dataclasses.fields(config)}


def _flag(config: type, field: str) -> str:
    """The flag a config field is given with: its first alias (``--steps``) or ``--field-name``."""
    import typing

    hint = typing.get_type_hints(config, include_extras=True).get(field)
    for meta in getattr(hint, "__metadata__", ()):
        aliases = getattr(meta, "aliases", None)
        if aliases:
            return aliases[0]
    return "--" + field.replace("_", "-")


def _checked(cmd: Any, learner: Any) -> Any:
    """``cmd`` with its config rebuilt as the learner's validated config; a refused field or train option
    raises :class:`UsageError` naming the flag and the value, before anything is built or written."""
    cmd.check()
    c = cmd.config
    try:
        config = learner.config(**_fields(c, learner.config))
    except ValueError as e:
        field = getattr(e, "field", None)
        if field is None:
            raise
        raise UsageError(f"{_flag(learner.config, field)} {e.why}, got {e.value!r}") from None
    return dataclasses.replace(cmd, config=config)


def _train_learner(argv: list[str]) -> tuple[str | None, list[str]]:
    """The learner named anywhere in ``proteus train`` arguments (``train rl2 --env E`` and
    ``train --env E rl2`` alike), and the arguments without it. Option values are skipped, so an env
    or folder named like a learner is never taken for one."""
    from meta_rl.learners import names

    known = names()
    flags = {"--progress", "--no-progress", "-h", "--help"}
    for n in known:  # boolean config fields are flags: they take no value
        from meta_rl.learners import get

        for f in dataclasses.fields(get(n).config):
            if f.type in (bool, "bool"):
                flag = f.name.replace("_", "-")
                flags |= {f"--{flag}", f"--no-{flag}", f"--{f.name}", f"--no-{f.name}"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            i += 1 if ("=" in a or a in flags) else 2
            continue
        if a in known:
            return a, argv[:i] + argv[i + 1:]
        i += 1
    return None, argv


def _env_arg(argv: list[str]) -> str:
    env = TrainOptions.env
    for i, a in enumerate(argv):
        if a == "--env" and i + 1 < len(argv):
            env = argv[i + 1]
        elif a.startswith("--env="):
            env = a.split("=", 1)[1]
    return env


@dataclasses.dataclass(frozen=True)
class TrainHelp:
    """Train a learner on an env: proteus train LEARNER --env ENV [options]; proteus train --help lists
    the learners, proteus train LEARNER --help their options."""

    def run(self) -> None:
        train_main(["--help"])


def train_main(argv: list[str]) -> Any:
    """Parse ``proteus train ...`` (``argv`` without ``train``) into a learner's train command."""
    from meta_rl.learners import get, names

    name, rest = _train_learner(argv)
    if name is None:  # no learner given: tyro lists them (help) or names the bad one
        union = Union[tuple(Annotated[train_command(n), tyro.conf.subcommand(n)] for n in names())]  # type: ignore[misc]
        return tyro.cli(union, args=argv, prog="proteus train", config=(tyro.conf.OmitSubcommandPrefixes,),
                        description="Train a learner on an env: proteus train LEARNER --env ENV [options]. "
                                    "Learners: " + "; ".join(f"{n}: {get(n).description}" for n in names()))
    cls = train_command(name)
    env = _env_arg(rest)
    flags = _unchecked(get(name).config)
    if "-h" in rest or "--help" in rest:
        default = cls(env=env)
        try:
            default = cls(env=env, config=flags(**_fields(get(name).default_config(env), flags)))
        except (KeyError, ValueError):
            pass
    else:
        default = cls(env=env, config=flags(**_fields(get(name).default_config(env), flags)))
    return _checked(tyro.cli(cls, args=rest, default=default, prog=f"proteus train {name}"), get(name))


@dataclasses.dataclass(frozen=True)
class BenchTrain:
    """Training env-steps/s: RL² on a bandit (target 1M/s), RL² and PPO on a native robot against its
    open-loop physics (target 50%), Proteus PPO against Brax's PPO trainer on the same MJX env (target 5x)."""

    bandit_env: str = "bandit-k10-n100"
    """Bandit env for the RL² row."""
    bandit_envs: int = 2048
    """Parallel bandit trials."""
    robot_env: str = "cheetah-vel"
    """MuJoCo robot env for the native and MJX rows."""
    robot_envs: int = 64
    """Parallel robots (native rows)."""
    mjx_envs: int = 64
    """Parallel robots (MJX rows)."""
    brax: bool = True
    """Include the (slow on CPU) Brax PPO comparison."""
    json: Path | None = None
    """Write the rows to this file."""
    learner: str | None = None
    """Instead, time this registered learner (its preset) on --robot-env (default cheetah-dir; any env,
    e.g. point-goal-x) against PPO on the same env and batch, and on a MuJoCo robot also against
    open-loop physics and RLlib's MAML rate (e.g. --learner maml, --learner epg)."""

    def run(self) -> None:
        if self.learner is not None:
            from meta_rl.learners import get
            from sim.registry import entry

            get(self.learner)  # an unknown learner is named with the known ones
            env = "cheetah-dir" if self.robot_env == "cheetah-vel" else self.robot_env
            entry(env)  # an unknown env is named with the known ones
            from proteus.bench import bench_train_learner

            bench_train_learner(self.learner, env, json_path=self.json)
            return
        from proteus.bench import bench_train

        bench_train(self.bandit_env, self.bandit_envs, self.robot_env, self.robot_envs, self.mjx_envs, self.brax,
                    json_path=self.json)


@dataclasses.dataclass(frozen=True)
class BenchExport:
    """onnxruntime latency per control step (median, p99; batch 1, 1 thread) of MLP and GRU policies
    beside the JAX jitted step of the same policy (targets: MLP < 20 us, GRU < 50 us median)."""

    steps: int = 2000
    """Timed steps per policy."""
    json: Path | None = None
    """Write the rows to this file."""

    def run(self) -> None:
        from deploy.bench import bench_export

        bench_export(self.json, steps=self.steps)


@dataclasses.dataclass(frozen=True)
class BenchDeploy:
    """The controller soak at its control rate on the MuJoCo stand-in with faults injected at random:
    faults injected and detected, unsafe commands written (must be 0), control-loop jitter (p50, p99,
    max) and overruns, and the cost of Controller.step over raw onnxruntime inference (target <= 2x)."""

    steps: int = 20_000
    """Soak control steps (100000: the issue's full soak)."""
    rate_hz: float = 500.0
    """Control rate."""
    fault_rate: float = 0.01
    """Chance of an injected fault per control step."""
    seed: int = 0
    """Seed of the fault schedule."""
    timing_steps: int = 5000
    """Steps per timed round of Controller.step against raw inference."""
    rounds: int = 5
    """Timed rounds (best is reported)."""
    env: str = "pendulum-swingup"
    """MuJoCo env the stand-in plays."""
    json: Path | None = None
    """Write the rows to this file."""

    def run(self) -> None:
        for flag, value, low in (("--steps", self.steps, 1), ("--timing-steps", self.timing_steps, 10),
                                 ("--rounds", self.rounds, 1)):
            if not _is_int(value) or value < low:
                raise UsageError(f"{flag} must be an integer >= {low}, got {value!r}")
        if not 0 < self.rate_hz <= 100_000:
            raise UsageError(f"--rate-hz must lie in (0, 100000], got {self.rate_hz!r}")
        if not 0 <= self.fault_rate <= 1:
            raise UsageError(f"--fault-rate must lie in [0, 1], got {self.fault_rate!r}")
        from sim.registry import entry

        if "native" not in entry(self.env).backends:  # an unknown env is named with the closest ids
            raise UsageError(f"--env must be a MuJoCo robot env (the stand-in plays it), got {self.env!r}")
        from deploy.bench import bench_deploy

        bench_deploy(self.json, steps=self.steps, rate_hz=self.rate_hz, fault_rate=self.fault_rate, seed=self.seed,
                     timing_steps=self.timing_steps, rounds=self.rounds, env_id=self.env)


@dataclasses.dataclass(frozen=True)
class BenchMemory:
    """DND lookups/s and writes/s (jitted) at each capacity, beside faiss-cpu's exact IndexFlatL2 on the
    same data when faiss is installed (PROTEUS_EXTRAS=bench)."""

    capacity: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    """Memory capacities (entries)."""
    key_dim: int = 64
    """Key dimension."""
    batch: int = 256
    """Queries (and new keys) per call."""
    k: int = 50
    """Neighbours per lookup."""
    json: Path | None = None
    """Write the rows to this file."""

    def run(self) -> None:
        from proteus.bench import bench_memory

        bench_memory(tuple(self.capacity), self.key_dim, self.batch, self.k, json_path=self.json)


@dataclasses.dataclass(frozen=True)
class BenchLearn:
    """Time-to-result, side by side in one run: each candidate training configuration (the learner's
    preset with fields overridden) trains from scratch and is scored on held-out worlds by the code of
    proteus eval every --eval-every env steps; the table gives the training seconds and env steps to
    each fraction of the reference (Gittins on bandits, PSRL on tabular MDPs), and each time against the
    first candidate's."""

    candidates: tuple[str, ...] = ("preset", "peer")
    """Candidates, the first being the baseline: names (preset, embed, heads, peer, minibatches-8, epochs-2,
    core-256, core-norm, popart, peer+popart) or NAME:field=value,field=value (widths as 128 or 128x128)."""
    env: str = "bandit-k10-n100"
    """A bandit or tabular MDP env."""
    learner: str = "rl2"
    """The registered learner (its preset is each candidate's starting point)."""
    steps: int | None = None
    """Each candidate's total_steps (its learning-rate schedule's length); default: the preset's."""
    max_seconds: float = 480.0
    """Training seconds per candidate at most (compilation included, evaluation excluded)."""
    eval_every: int = 500_000
    """Env steps between evaluations (rounded to whole updates)."""
    targets: tuple[float, ...] | None = None
    """Fractions of the reference to time (default: 0.9 0.95 0.98 of Gittins; 1.0 of PSRL)."""
    tasks: int = 1000
    """Held-out worlds per evaluation (the same for every candidate)."""
    split: str = "train"
    """Split the held-out worlds are drawn from."""
    seed: int = 0
    """Training seed (the same for every candidate)."""
    stop: bool = True
    """Stop a candidate once it reaches the highest target."""
    json: Path | None = None
    """Write the rows and every curve to this file."""
    plot: Path | None = None
    """Write the curves (ratio against seconds and env steps) to this image."""
    progress: bool = True
    """Show progress bars."""

    def run(self) -> None:
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise UsageError(f"--steps must be an integer >= 1, got {self.steps!r}")
        if not self.max_seconds > 0:
            raise UsageError(f"--max-seconds must be > 0, got {self.max_seconds!r}")
        if not _is_int(self.eval_every) or self.eval_every < 1:
            raise UsageError(f"--eval-every must be an integer >= 1, got {self.eval_every!r}")
        if not _is_int(self.tasks) or self.tasks < 2:
            raise UsageError(f"--tasks must be an integer >= 2 (a confidence interval needs two worlds), got {self.tasks!r}")
        if self.targets is not None and (not self.targets or any(not 0 < t <= 2 for t in self.targets)):
            raise UsageError(f"--targets must be fractions of the reference in (0, 2], got {self.targets!r}")
        if not self.candidates:
            raise UsageError("--candidates needs at least one candidate")
        from proteus.bench_learn import bench_learn

        bench_learn(list(self.candidates), self.env, self.learner, steps=self.steps, max_seconds=self.max_seconds,
                    eval_every=self.eval_every, targets=self.targets, tasks=self.tasks, split=self.split,
                    seed=self.seed, stop=self.stop, json_path=self.json, plot_path=self.plot, progress=self.progress)


@dataclasses.dataclass(frozen=True)
class BenchRender:
    """Rendering cost of a pixel env, side by side in one run for each image size: frames/s of its batch
    renderer alone (random training appearances, varied poses), env-steps/s of the same task's physics
    without the camera, and env-steps/s of the pixel env (physics + rendering + pixel effects inside one
    jitted scan), with the ratios."""

    env: str = "cartpole-balance-pixels"
    """Registered pixel env id (proteus render refuses others the same way)."""
    worlds: int = 64
    """Worlds rendered and stepped at once."""
    sizes: tuple[int, ...] = (64, 84)
    """Square image sizes (pixels per side)."""
    seconds: float = 3.0
    """Seconds per measurement and image size, in 3 interleaved rounds (after a warm-up call; compilation excluded)."""
    threads: int = 1
    """The renderer's GL contexts drawing slices of the batch in parallel."""
    steps: int = 50
    """Env steps per jitted scan (physics only and pixel env)."""
    json: Path | None = None
    """Write the rows to this file."""

    def run(self) -> None:
        for flag, value in (("--worlds", self.worlds), ("--threads", self.threads), ("--steps", self.steps)):
            if not _is_int(value) or value < 1:
                raise UsageError(f"{flag} must be an integer >= 1, got {value!r}")
        if not self.seconds > 0 or self.seconds > 600:
            raise UsageError(f"--seconds must lie in (0, 600], got {self.seconds!r}")
        if not self.sizes:
            raise UsageError("--sizes needs at least one image size")
        for size in self.sizes:
            _check_size("--sizes", size)
        _check_pixel_env(self.env)
        from proteus.bench import bench_render

        bench_render(self.env, self.worlds, tuple(self.sizes), self.seconds, self.threads, self.steps,
                     json_path=self.json)


BenchWhat = Union[
    Annotated[BenchBaselines, tyro.conf.subcommand("baselines")],
    Annotated[BenchEnv, tyro.conf.subcommand("env")],
    Annotated[BenchSim, tyro.conf.subcommand("sim")],
    Annotated[BenchTrain, tyro.conf.subcommand("train")],
    Annotated[BenchExport, tyro.conf.subcommand("export")],
    Annotated[BenchDeploy, tyro.conf.subcommand("deploy")],
    Annotated[BenchMemory, tyro.conf.subcommand("memory")],
    Annotated[BenchLearn, tyro.conf.subcommand("learn")],
    Annotated[BenchRender, tyro.conf.subcommand("render")],
]


@dataclasses.dataclass(frozen=True)
class Bench:
    """Benchmarks: every figure printed beside its named baseline, with the ratio."""

    what: tyro.conf.OmitSubcommandPrefixes[BenchWhat]

    def run(self) -> None:
        self.what.run()


MAX_RESOLUTION = 1024
"""``sim.render.MAX_RESOLUTION``, the largest image side, kept here so refusing ``--height`` and the like
imports no MuJoCo or JAX (tests/test_render_cli.py checks the two agree)."""


def _check_size(flag: str, value: Any) -> int:
    """An image side in pixels, ``[1, MAX_RESOLUTION]``; else :class:`UsageError` naming ``flag``."""
    if not _is_int(value) or not 1 <= value <= MAX_RESOLUTION:
        raise UsageError(f"{flag} must be an integer in [1, {MAX_RESOLUTION}] pixels, got {value!r}")
    return value


def _check_pixel_env(env: str) -> None:
    """Refuse an unknown env (naming the closest ids) or one without a camera (naming the pixel envs)."""
    from sim.registry import entry

    if "native" not in entry(env).backends:  # not a MuJoCo robot, so no camera
        from proteus.render import not_a_pixel_env

        raise UsageError(not_a_pixel_env(env))
    from proteus.render import pixel_base

    pixel_base(env)  # a MuJoCo robot without a camera raises naming the pixel envs


@dataclasses.dataclass(frozen=True)
class Render:
    """Draw a pixel env's randomized worlds: per split a grid of --worlds worlds' first observation images
    (OUT/ENV-grid-SPLIT.png, the same draws moved into each split's ranges), and a --steps rollout under
    random actions in a few training worlds, side by side (OUT/ENV-rollout.gif). Images are the env's own
    observations: its appearance randomization, pixel effects and latency included."""

    env: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="ENV")]]
    """Registered pixel env id (e.g. cartpole-balance-pixels)."""
    out: Path = Path("renders")
    """Folder the images go to (created; files of the same names are replaced)."""
    worlds: int = 16
    """Worlds per split grid."""
    seed: int = 0
    """Seed of the worlds and the rollout's actions: same seed, same images."""
    splits: tuple[Literal["train", "interp", "extrap"], ...] = ("train", "interp", "extrap")
    """Splits to draw a grid of."""
    steps: int = 100
    """Control steps of the rollout GIF."""
    height: int | None = None
    """Image height in pixels (default: the env's own)."""
    width: int | None = None
    """Image width in pixels (default: the env's own)."""
    gif: bool = True
    """Write the rollout GIF."""
    gif_worlds: int = 4
    """Training worlds side by side in the GIF (at most --worlds)."""

    def run(self) -> None:
        for flag, value in (("--worlds", self.worlds), ("--steps", self.steps), ("--gif-worlds", self.gif_worlds)):
            if not _is_int(value) or value < 1:
                raise UsageError(f"{flag} must be an integer >= 1, got {value!r}")
        if self.worlds > 4096:
            raise UsageError(f"--worlds must be at most 4096 (one grid image), got {self.worlds}")
        if self.steps > 10_000:
            raise UsageError(f"--steps must be at most 10000 (every frame is kept for the GIF), got {self.steps}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not self.splits:
            raise UsageError("--splits needs at least one of train, interp, extrap")
        for flag, value in (("--height", self.height), ("--width", self.width)):
            if value is not None:
                _check_size(flag, value)
        _check_pixel_env(self.env)
        from proteus.render import render_env

        paths = render_env(self.env, self.out, self.worlds, self.seed, tuple(dict.fromkeys(self.splits)), self.steps,
                           self.height, self.width, self.gif, self.gif_worlds)
        for path in paths:
            print(f"wrote {path}")


@dataclasses.dataclass(frozen=True)
class Eval:
    """Evaluate a run zero-shot on held-out dynamics: return per split against the oracle (or known
    optimum) and the DR baseline, within-trial adaptation, per-parameter sweeps; writes RUN/eval/."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder (runs/NAME)."""
    split: tuple[Literal["train", "interp", "extrap"], ...] = ("train", "interp", "extrap")
    """Splits to evaluate."""
    tasks: int | None = None
    """Worlds per split (default 256 for robots, 1000 otherwise); one trial each."""
    baseline: Annotated[tuple[Path, ...], tyro.conf.UseAppendAction] = ()
    """A baseline run folder on the same env (e.g. proteus train ppo); repeat --baseline to compare several
    on the same worlds."""
    oracle: Path | None = None
    """A run trained on the exact world, where no known optimum exists."""
    overwrite: bool = False
    """Replace a previous eval/report.json."""
    json: Path | None = None
    """Also write the rows (name, value, baseline, ratio) to this file."""
    actions: Literal["auto", "mode", "sample"] = "auto"
    """How policies act: the distribution's mode (what ``proteus export`` deploys), samples from it,
    or auto (mode for continuous actions, samples for discrete ones)."""
    finetune: bool = False
    """For a learner that adapts by gradient (maml): also score each --baseline's policy, and a random
    initialization, adapted by the run's own test-time step, on the same worlds."""
    episodes: int | None = None
    """Episodes per trial (default: the env's). A gradient learner adapts after each episode: 4 gives
    its returns after 0, 1, 2 and 3 inner steps."""
    adapt_episodes: int | None = None
    """Every gradient learner (maml, promp: the run and its baselines) takes each inner step on this
    many episodes (default 1); with --episodes 11, --adapt-episodes 10 scores the step as MAML trains
    it (10 rollouts) in episode 11."""
    env: str | None = None
    """Evaluate on this registered env instead of the run's: the same observation and action names
    (e.g. a point-arc run on point-arc-sparse, whose training goals are sparse too); writes RUN/eval-ENV/."""
    reset_memory: bool = False
    """The memory ablation: every learner's state (RL²'s hidden state, an episodic memory, adapted
    weights) is reset at each episode end, so episode 2 minus episode 1 shows what carrying it across
    episodes was worth; writes RUN/eval-reset-memory/."""

    def run(self) -> None:
        from proteus.runspec import read_run_spec

        for path in (self.run_dir, *self.baseline, *([self.oracle] if self.oracle else [])):
            read_run_spec(path)  # a missing or foreign folder is refused before JAX loads
        if self.tasks is not None and self.tasks < 2:
            raise UsageError(f"--tasks must be >= 2 (a confidence interval needs two worlds), got {self.tasks}")
        if self.episodes is not None and not 1 <= self.episodes <= 10_000:
            raise UsageError(f"--episodes must lie in [1, 10000], got {self.episodes}")
        if self.adapt_episodes is not None and not 1 <= self.adapt_episodes <= 1000:
            raise UsageError(f"--adapt-episodes must lie in [1, 1000], got {self.adapt_episodes}")
        from proteus.evaluation import evaluate_run

        det = {"auto": None, "mode": True, "sample": False}[self.actions]
        evaluate_run(self.run_dir, splits=self.split, tasks=self.tasks, baseline_run=list(self.baseline),
                     oracle_run=self.oracle, json_path=self.json, overwrite=self.overwrite, deterministic=det,
                     finetune=self.finetune, episodes=self.episodes, adapt_episodes=self.adapt_episodes,
                     env=self.env, reset_memory=self.reset_memory)


@dataclasses.dataclass(frozen=True)
class Export:
    """Export a run's policy to ONNX (normalization and action scaling inside the graph) after a parity
    check against JAX on recorded rollouts and random inputs; writes POLICY.onnx and a parity plot."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder (runs/NAME)."""
    out: Path | None = None
    """ONNX file (default RUN/policy.onnx)."""
    overwrite: bool = False
    """Replace an existing file."""

    def run(self) -> None:
        from proteus.runspec import read_run_spec

        read_run_spec(self.run_dir)  # a missing or foreign folder is refused before JAX loads
        from proteus.export import export_run

        export_run(self.run_dir, self.out, self.overwrite)


@dataclasses.dataclass(frozen=True)
class EvalLoss:
    """Score an epg run's evolved loss: fresh agents live a whole lifetime in each held-out world learning
    from it alone, against the same agents learning from PPO's loss (its step size and Adam steps tuned on
    other worlds) and from a random loss; final return per split with paired 95% CIs and the lifetime
    curves; writes RUN/eval-loss/."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder (runs/NAME) of an epg run."""
    split: tuple[Literal["train", "interp", "extrap"], ...] = ("train", "extrap")
    """Splits to evaluate (the change from train is reported for the others)."""
    tasks: int = 200
    """Worlds per split (the same worlds as proteus eval --tasks N): one lifetime each per loss."""
    tune_tasks: int = 64
    """Training-split worlds (another seed) on which PPO's inner step size and Adam steps are tuned."""
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    """PPO's inner learning rates tried."""
    minibatches: tuple[int, ...] = (2, 8)
    """PPO's Adam steps per inner update tried (each divides update_every)."""
    overwrite: bool = False
    """Replace a previous eval-loss/report.json."""
    progress: bool = True
    """Show the progress bar."""

    def run(self) -> None:
        from proteus.runspec import read_run_spec

        spec = read_run_spec(self.run_dir)  # a missing or foreign folder is refused before JAX loads
        if spec.algo != "epg":
            raise UsageError(f"{self.run_dir} is a {spec.algo} run; eval-loss scores an epg run (proteus eval "
                             f"scores a {spec.algo} policy)")
        if self.tasks < 2 or self.tune_tasks < 2:
            raise UsageError(f"--tasks and --tune-tasks must be >= 2, got {self.tasks} and {self.tune_tasks}")
        from proteus.loss_eval import evaluate_loss

        evaluate_loss(self.run_dir, self.split, self.tasks, self.tune_tasks, self.lrs, self.minibatches,
                      self.overwrite, progress=self.progress)


@dataclasses.dataclass(frozen=True)
class Adapt:
    """Adapt a MAML/ProMP run's policy on episodes a robot recorded (`proteus deploy POLICY --explore
    --record FILE`, or a robot's own deploy.episodes.EpisodeRecorder): one inner step, exported as a
    parity-checked ONNX policy with an adapt.json report."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder (runs/NAME) of a maml or promp run."""
    episodes: Path
    """The recorded episodes (.npz)."""
    out: Path | None = None
    """Adapted ONNX policy (default RUN/adapted/policy.onnx)."""
    overwrite: bool = False
    """Replace existing files."""

    def run(self) -> None:
        from proteus.runspec import read_run_spec

        read_run_spec(self.run_dir)  # a missing or foreign folder is refused before JAX loads
        if not Path(self.episodes).is_file():
            raise FileNotFoundError(f"no episode file at {self.episodes}")
        from proteus.adapt import adapt_run

        adapt_run(self.run_dir, self.episodes, self.out, self.overwrite)


@dataclasses.dataclass(frozen=True)
class Deploy:
    """Run an ONNX policy in the fixed-rate runtime against a MuJoCo stand-in for the robot, with hidden
    dynamics, sensor latency and another physics timestep; writes the sim2sim report (JSON + PNG)."""

    onnx: tyro.conf.Positional[Path]
    """The exported policy (proteus export)."""
    standin: str = "cartpole-balance"
    """Registered MuJoCo env the stand-in plays (must match the policy)."""
    latency_ms: str = "0:20"
    """Sensor latency range A:B in milliseconds."""
    friction: str | None = "0.3:1.2"
    """Friction scale range A:B (None: nominal)."""
    mass: str | None = None
    """Mass scale range A:B (None: nominal)."""
    gain: str | None = None
    """Motor strength scale range A:B (None: nominal)."""
    noise_std: float = 0.0
    """Observation noise std."""
    timestep: float | None = None
    """Physics timestep in seconds (None: the training one); the control period is kept."""
    worlds: int = 8
    """Stand-in worlds, spread evenly over the ranges."""
    training_return: float | None = None
    """The policy's training return (default: measured in JAX when the run folder is beside the ONNX file)."""
    seed: int = 0
    """Seed of worlds, noise and initial states."""
    out: Path | None = None
    """Report folder (default POLICY_sim2sim/ beside the ONNX file)."""
    overwrite: bool = False
    """Replace a previous report."""
    json: Path | None = None
    """Also write the whole report to this file."""
    episodes: int | None = None
    """Episodes per world (default: one trial for an RL² policy, 2 otherwise)."""
    task: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """A task parameter of the stand-in's world, NAME=VALUE (repeatable; e.g. --task direction=-1).
    Unset ones take the middle of their training range."""
    explore: bool = False
    """Sample actions from the policy's Gaussian instead of its mode (MAML/ProMP policies: the episodes
    they adapt on)."""
    record: Path | None = None
    """Save the episodes (observations, sampled actions, rewards) to this .npz for `proteus adapt`
    (needs --worlds 1)."""
    appearance: str | None = None
    """A pixel env's appearance per world: a split (train, interp, extrap) each world draws its own
    from (colours, textures, lights, camera pose, sky, distractors, pixel noise); None: the nominal one."""

    def run(self) -> None:
        from proteus.demo import deploy_standin

        if self.appearance is not None and self.appearance not in ("train", "interp", "extrap"):
            raise UsageError(f"--appearance must be train, interp or extrap, got {self.appearance!r}")
        deploy_standin(self.onnx, self.standin, self.latency_ms, self.friction, self.mass, self.gain, self.noise_std,
                       self.timestep, self.worlds, self.training_return, self.seed, self.out, self.overwrite, self.json,
                       episodes=self.episodes, task=self.task, explore=self.explore, record=self.record,
                       appearance=self.appearance)


@dataclasses.dataclass(frozen=True)
class Demo:
    """The whole story in a few minutes on 2 cores: train RL² on the randomized cart-pole (native MuJoCo),
    evaluate on held-out dynamics, export to ONNX, run it in the MuJoCo stand-in, print every artefact."""

    out: Path | None = None
    """Demo folder (default a fresh runs/demo-DATE-TIME; give an existing one to resume)."""
    env: str = "cartpole-balance"
    """Robot env."""
    steps: int = 1_000_000
    """Training env steps."""
    seed: int = 0
    """Seed."""
    progress: bool = True
    """Show progress bars."""
    standin_worlds: int = 8
    """Worlds the MuJoCo stand-in plays (fewer: a quicker check)."""

    def run(self) -> None:
        from meta_rl.configs import ConfigError
        from meta_rl.presets import default_config

        if not _is_int(self.standin_worlds) or self.standin_worlds < 1:
            raise UsageError(f"--standin-worlds must be an integer >= 1, got {self.standin_worlds!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed must be an integer in [0, 2**32), got {self.seed!r}")
        from sim.registry import entry

        if "native" not in entry(self.env).backends:  # an unknown env is named with the closest ids
            raise UsageError(f"--env must be a MuJoCo robot env (the demo trains on native MuJoCo), got {self.env!r}")
        try:  # the training config, checked before JAX loads
            default_config("rl2", self.env, total_steps=self.steps)
        except ConfigError as e:
            raise UsageError(f"--steps {e.why}, got {e.value!r}" if e.field == "total_steps" else str(e)) from None
        from proteus.demo import demo
        demo(self.out, self.env, self.steps, self.seed, self.progress, standin_worlds=self.standin_worlds)


Command = Union[
    Annotated[TrainHelp, tyro.conf.subcommand("train")],
    Annotated[Eval, tyro.conf.subcommand("eval")],
    Annotated[EvalLoss, tyro.conf.subcommand("eval-loss")],
    Annotated[Export, tyro.conf.subcommand("export")],
    Annotated[Adapt, tyro.conf.subcommand("adapt")],
    Annotated[Deploy, tyro.conf.subcommand("deploy")],
    Annotated[Demo, tyro.conf.subcommand("demo")],
    Annotated[Envs, tyro.conf.subcommand("envs")],
    Annotated[Render, tyro.conf.subcommand("render")],
    Annotated[Bench, tyro.conf.subcommand("bench")],
]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] == "train":
            cmd = train_main(argv[1:])
        else:
            cmd = tyro.cli(Command, args=argv, prog="proteus", config=(tyro.conf.OmitSubcommandPrefixes,),
                           description="Proteus: meta-RL and sim2real robotics.")
        cmd.run()
    except (KeyError, ValueError) as e:  # refusals (RunLocked and RunFolderError are ValueErrors)
        msg = e.args[0] if e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:  # unreadable or unwritable paths: read-only folders, --out under a file, a full disk
        print(f"error: {_os_error(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except RuntimeError as e:  # refusals with a full message: parity failure, NaN loss, Ctrl-C in training
        if type(e).__name__ == "RunInterrupted":  # its message says where the run resumes from
            print(e, file=sys.stderr)
            raise SystemExit(130) from None
        if type(e).__name__ not in ("ParityError", "NonFiniteLoss", "ControllerStopped"):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _os_error(e: OSError) -> str:
    """``PATH: reason`` for an OSError that names a path, else its message."""
    if e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return e.args[0] if len(e.args) == 1 else str(e)

if __name__ == "__main__":
    main()
