"""``proteus render`` and ``proteus bench render``: files written, sizes, refusals, the bench table."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from proteus.cli import main

ENV = "cartpole-balance-pixels"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One small ``proteus render`` run (16x24 images, 4 worlds, every split, a 3-step GIF of 2 worlds)."""
    out = tmp_path_factory.mktemp("renders")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["render", ENV, "--out", str(out), "--worlds", "4", "--height", "16", "--width", "24", "--steps", "3",
              "--gif-worlds", "2"])
    return out, printed.getvalue()


def test_render_writes_a_grid_per_split_and_the_gif(rendered):
    from PIL import Image

    from proteus.render import PAD, grid_size

    rendered, printed = rendered
    for path in sorted(rendered.iterdir()):
        assert f"wrote {path}" in printed
    names = sorted(p.name for p in rendered.iterdir())
    assert names == sorted([f"{ENV}-grid-{s}.png" for s in ("train", "interp", "extrap")] + [f"{ENV}-rollout.gif"])
    grids = {}
    for split in ("train", "interp", "extrap"):
        with Image.open(rendered / f"{ENV}-grid-{split}.png") as im:
            assert im.size == grid_size(4, 16, 24) == (2 * (24 + PAD) + PAD, 2 * (16 + PAD) + PAD)
            grids[split] = np.asarray(im.convert("RGB"))
    # randomized worlds: tiles differ from one another, and the splits' worlds differ
    tiles = [grids["train"][PAD + r * (16 + PAD):][:16, PAD + c * (24 + PAD):][:, :24] for r in (0, 1) for c in (0, 1)]
    assert any(not np.array_equal(tiles[0], t) for t in tiles[1:])
    assert not np.array_equal(grids["train"], grids["extrap"])
    with Image.open(rendered / f"{ENV}-rollout.gif") as gif:
        assert gif.n_frames == 4  # the reset frame and 3 steps
        assert gif.size == grid_size(2, 16, 24, cols=2) == (2 * (24 + PAD) + PAD, 16 + 2 * PAD)
        assert gif.info["duration"] == 40  # cart-pole's control period, 0.04 s


@pytest.mark.parametrize("env", ["cartpole-balance", "bandit-k5-n10"])
def test_render_refuses_a_non_pixel_env_naming_it(env, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["render", env, "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{env} is not a pixel env" in err
    assert "cartpole-balance-pixels" in err and "reacher-pixels" in err  # the pixel envs are listed
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, flag, value", [
    (["--height", "0"], "--height", "0"),
    (["--width", "1025"], "--width", "1025"),
])
def test_render_refuses_a_bad_resolution_naming_it(argv, flag, value, tmp_path, capsys):
    from sim.render import MAX_RESOLUTION

    with pytest.raises(SystemExit) as e:
        main(["render", ENV, "--out", str(tmp_path), *argv])
    assert e.value.code == 2
    assert f"{flag} must be an integer in [1, {MAX_RESOLUTION}] pixels, got {value}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_cli_knows_the_renderers_largest_image():
    from proteus import cli
    from sim.render import MAX_RESOLUTION

    assert cli.MAX_RESOLUTION == MAX_RESOLUTION


_NO_JAX = """
import sys
from proteus.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("jax", "mujoco") if m in sys.modules)
print("HEAVY", ",".join(heavy), "CODE", code)
"""


@pytest.mark.parametrize("args", [
    ["render", ENV, "--height", "0"],
    ["render", ENV, "--worlds", "0"],
    ["render", "no-such-env"],
    ["bench", "render", "--sizes", "64", "0"],
])
def test_flag_refusals_load_no_jax_or_mujoco(tmp_path, args):
    """As every command's (tests/test_faults_cli.py): a refused flag value answers before JAX or MuJoCo load."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _NO_JAX, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "HEAVY  CODE 2", r.stderr[-2000:]
    assert r.stderr.startswith("error: ")
    assert not any(tmp_path.iterdir())


def test_bench_render_refuses_a_bad_size_and_a_non_pixel_env(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "render", "--sizes", "64", "2000"])
    assert "--sizes must be an integer in [1, 1024] pixels, got 2000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "render", "--env", "pendulum-swingup"])
    assert "pendulum-swingup is not a pixel env" in capsys.readouterr().err


def test_bench_render_small_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "render.json"
    main(["bench", "render", "--worlds", "2", "--sizes", "12", "--seconds", "0.05", "--steps", "2", "--threads", "2",
          "--json", str(path)])
    out = capsys.readouterr().out
    for col in ("render only (frames/s)", "physics only (steps/s)", "pixel env (steps/s)",
                "pixel env / render only", "render only / physics"):
        assert col in out
    assert "12x12" in out and "renderer threads 2" in out
    data = json.loads(path.read_text())
    r = data["results"]["12x12"]
    assert r["render_frames_per_s"] > 0 and r["physics_steps_per_s"] > 0 and r["pixel_steps_per_s"] > 0
    assert data["threads"] == 2 and data["worlds"] == 2
    for row in data["rows"]:
        assert row["ratio"] == pytest.approx(row["value"] / row["baseline"])
