"""Visual domain randomization and pixel envs (issue 20): every appearance term changes the image,
images are deterministic, worlds differ, the jitted observation equals the host render, bad input is
refused by name, and a pixel policy exports with its image input and runs in the camera stand-in."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import sim
from randomization.ranges import SplitRange
from randomization.visual import (TEXTURE_KINDS, Colors, PixelEffects, Textures, VisualSpec, apply_pixel_effects,
                                  hsv_to_rgb)
from robots.cartpole import VISUAL as CARTPOLE_VISUAL
from robots.common import suite_spec
from sim.render import MAX_RESOLUTION, BatchRenderer, RenderError, check_resolution, gl_context

B = 6
SIZE = 32


@pytest.fixture(scope="module")
def cart():
    """The cart-pole's render model with every visual term, a renderer, and worlds' appearances."""
    visual = CARTPOLE_VISUAL.resolve(suite_spec("cartpole"), "fixed")
    renderer = BatchRenderer(visual.model, SIZE, SIZE, "fixed", visual, tiles=4)
    qpos = np.tile(visual.model.qpos0, (B, 1))
    qpos[:, 1] = np.linspace(-0.3, 0.3, B)
    worlds = jax.vmap(lambda k: visual.sample(k, "train"))(jax.random.split(jax.random.key(0), B))
    yield visual, renderer, qpos, worlds
    renderer.close()


def _draw(visual, renderer, qpos, values):
    flat = np.asarray(visual.flatten(values), np.float32).reshape(-1, visual.size)
    return renderer.render(qpos[: flat.shape[0]], flat)


GROUPS = ("color.", "texture.", "light.", "camera.", "sky.", "distractor.")


@pytest.mark.parametrize("group", GROUPS)
def test_every_visual_term_changes_the_image(cart, group):
    visual, renderer, qpos, _ = cart
    nominal = visual.nominal()
    drawn = visual.sample(jax.random.key(3), "train")
    if group == "distractor.":  # at least two shown, in front of the camera
        drawn = {**drawn, "distractor.count": jnp.float32(4.0), "distractor.pos": jnp.asarray([[-0.6, -1.0, 1.0], [0.6, -1.0, 1.3]] * 2),
                 "distractor.size": jnp.full((4,), 0.15)}
    if group == "texture.":  # a kind other than the floor's own grid
        drawn = {**drawn, "texture.kind": jnp.asarray([1.0])}
    if group == "light.":  # the nominal light moved and dimmed
        drawn = {**drawn, "light.diffuse": jnp.float32(0.5)}
    changed = {n: (drawn[n] if n.startswith(group) else v) for n, v in nominal.items()}
    a = _draw(visual, renderer, qpos[:1], nominal)[0].astype(np.int32)
    b = _draw(visual, renderer, qpos[:1], changed)[0].astype(np.int32)
    changed_pixels = int((np.abs(a - b).max(-1) > 10).sum())  # the cart and pole are a few dozen pixels
    assert changed_pixels >= 8, f"{group}: {changed_pixels} pixels changed by more than 10 levels"


@pytest.mark.parametrize("effect", ["pixel.noise", "pixel.gain", "pixel.bias", "pixel.blur"])
def test_every_pixel_effect_changes_the_image(cart, effect):
    visual, renderer, qpos, _ = cart
    nominal = visual.nominal()
    image = jnp.asarray(_draw(visual, renderer, qpos[:1], nominal)[0])
    same = apply_pixel_effects(image, nominal, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(same), np.asarray(image))  # nominal effects: the image itself
    strong = {"pixel.noise": 0.05, "pixel.gain": jnp.asarray([1.3, 0.8, 1.0]), "pixel.bias": 0.1, "pixel.blur": 1.5}
    out = apply_pixel_effects(image, {**nominal, effect: strong[effect]}, jax.random.key(0))
    assert out.dtype == jnp.uint8 and np.abs(np.asarray(out, np.int32) - np.asarray(image, np.int32)).mean() > 0.5


def test_same_world_same_image_and_worlds_differ(cart):
    visual, renderer, qpos, worlds = cart
    a = _draw(visual, renderer, qpos, worlds)
    b = _draw(visual, renderer, qpos, worlds)
    np.testing.assert_array_equal(a, b)
    other = BatchRenderer(visual.model, SIZE, SIZE, "fixed", visual, tiles=4)
    try:
        np.testing.assert_array_equal(other.render(qpos, np.asarray(jax.vmap(visual.flatten)(worlds))), a)
    finally:
        other.close()
    for i in range(1, B):
        assert np.abs(a[0].astype(np.int32) - a[i].astype(np.int32)).mean() > 1.0


def test_extrap_holds_appearances_training_never_draws(cart):
    visual = cart[0]
    keys = jax.random.split(jax.random.key(1), 256)
    train = jax.vmap(lambda k: visual.sample(k, "train"))(keys)
    extrap = jax.vmap(lambda k: visual.sample(k, "extrap"))(keys)
    assert set(np.unique(np.asarray(train["texture.kind"]))) <= {0.0, 1.0}
    assert set(np.unique(np.asarray(extrap["texture.kind"]))) == {2.0}  # the noise kind, never trained on
    assert float(jnp.max(train["pixel.noise"])) <= 0.03 < float(jnp.min(extrap["pixel.noise"])) + 1e-6
    assert TEXTURE_KINDS[2] == "noise"


def test_hsv_to_rgb_matches_colorsys():
    import colorsys

    for h, s, v in [(0.0, 1.0, 1.0), (0.2, 0.5, 0.7), (0.55, 0.3, 0.9), (0.95, 0.8, 0.4)]:
        np.testing.assert_allclose(np.asarray(hsv_to_rgb(jnp.float32(h), jnp.float32(s), jnp.float32(v))),
                                   colorsys.hsv_to_rgb(h, s, v), atol=1e-6)


@pytest.fixture(scope="module")
def pixel_env():
    return sim.make("cartpole-balance-pixels", batch_size=3, mode="fresh")


def _same_image(a, b):
    """Equal up to the pixel effects' float rounding: XLA fuses ``x * gain + bias + noise`` differently
    inside and outside jit, so a value on a rounding boundary may land one level apart."""
    diff = np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_jitted_observation_equals_the_host_render(pixel_env):
    env = pixel_env
    base = env.unwrapped
    params = env.sample_params(jax.random.key(7), "extrap")
    keys = jax.random.split(jax.random.key(8), 3)
    s = jax.jit(env.reset)(keys, params)
    eager = env.reset(keys, params)
    _same_image(s.obs["image"], eager.obs["image"])
    # the same image from the renderer on the host, with the world's pixel effects
    inner = params["env"]
    qpos = np.asarray(s.env_state["inner"]["physics"])[:, 1:1 + base.model.nq]
    flat = np.asarray(jax.vmap(base.visual.flatten)(inner["visual"]))
    raw = base.render_images(qpos, flat, np.zeros((3, 0), np.float32))
    from sim.mujoco_env import VISUAL_KEY

    k_env = jax.vmap(lambda k: jax.random.split(k)[0])(keys)  # the effects wrapper's inner key
    for i in range(3):
        world = jax.tree.map(lambda x: x[i], inner["visual"])
        expect = apply_pixel_effects(jnp.asarray(raw[i]), world, jax.random.fold_in(k_env[i], VISUAL_KEY))
        _same_image(s.obs["image"][i], expect)


def test_same_key_draws_the_same_dynamics_as_the_vector_env():
    pixels = sim.make("cartpole-balance-pixels", mode="fresh")
    vector = sim.make("cartpole-balance", mode="fresh")
    for split in sim.SPLITS:
        a = pixels.sample_params(jax.random.key(4), split)
        b = vector.sample_params(jax.random.key(4), split)
        for x, y in zip(jax.tree.leaves(a["env"]["dynamics"]), jax.tree.leaves(b["env"]["dynamics"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a["effects"]), jax.tree.leaves(b["effects"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_reacher_shows_its_goal_where_the_task_puts_it():
    env = sim.make("reacher-pixels", batch_size=2, mode="fresh").unwrapped
    p = env.nominal_params()
    qpos = np.tile(env.model.qpos0, (2, 1))
    flat = np.tile(np.asarray(env.visual.flatten(p["visual"])), (2, 1))
    markers = np.asarray([[0.15, 0.0, 0.01], [-0.15, 0.0, 0.01]], np.float32)
    images = env.render_images(qpos, flat, markers)
    # the camera looks straight down with world x to the right: moving the target from x = +0.15 to
    # x = -0.15 changes a blob around column 32 + 0.15 / 0.31 * 32 = 47 and its mirror around column 16
    moved = np.abs(images[0].astype(np.int32) - images[1].astype(np.int32)).max(-1) > 30
    cols = np.nonzero(moved)[1]
    assert ((cols > 40) & (cols < 55)).sum() >= 10 and ((cols > 9) & (cols < 24)).sum() >= 10, cols
    assert not ((cols >= 26) & (cols <= 38)).any()  # nothing moved in between (the arm stayed put)


# -- bad input: refused, naming the value ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, -4, MAX_RESOLUTION + 1, 2.5, True])
def test_bad_resolution_is_refused_by_name(size):
    with pytest.raises(ValueError, match=r"image height must be an integer in \[1, "):
        check_resolution(size, 64)


def test_unknown_camera_and_texture_material_are_refused_by_name(cart):
    visual = cart[0]
    with pytest.raises(ValueError, match=r"no camera named 'top'.*fixed, lookatcart"):
        BatchRenderer(visual.model, 16, 16, "top")
    with pytest.raises(ValueError, match=r"Textures.materials: no material named 'floor'.*grid"):
        VisualSpec(textures=Textures(("floor",))).resolve(suite_spec("cartpole"), "fixed")
    bare = mujoco.MjSpec.from_string('<mujoco><worldbody><camera name="c" pos="0 0 1"/><geom size=".1"/></worldbody></mujoco>')
    with pytest.raises(ValueError, match=r"no material named 'grid'; valid names: none"):
        VisualSpec(textures=Textures(("grid",))).resolve(bare, "c")
    with pytest.raises(ValueError, match=r"camera: no camera named 'side'"):
        VisualSpec(colors=Colors(("self",))).resolve(suite_spec("cartpole"), "side")
    with pytest.raises(ValueError, match="PixelEffects.noise"):
        PixelEffects(noise=SplitRange("n", (-0.1, 0.1)))
    with pytest.raises(ValueError, match="Textures.kind"):
        Textures(("grid",), kind=SplitRange("k", (0.0, 5.0), dist="discrete"))


def test_no_gl_backend_gives_a_clear_message(monkeypatch):
    import mujoco.egl

    def broken(*a, **k):
        raise RuntimeError("eglInitialize failed")

    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setattr(mujoco.egl, "GLContext", broken)
    with pytest.raises(RenderError, match=r"tried MUJOCO_GL=egl .*eglInitialize failed.*osmesa, glfw"):
        gl_context(8, 8)
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    with pytest.raises(RenderError, match=r"MUJOCO_GL='vulkan' is not a rendering backend"):
        gl_context(8, 8)


def test_nominal_variant_never_randomizes_appearance():
    env = sim.make("cartpole-balance-pixels-nominal", batch_size=2, mode="fresh")
    assert env.unwrapped.visual.size == 0
    assert dataclasses.asdict(env.unwrapped.pixels.visual) == dataclasses.asdict(VisualSpec())


def test_pixel_policy_exports_its_image_input_and_drives_the_camera_standin(tmp_path):
    """An RL² pixel policy: ONNX with a uint8 ``obs.image`` input (parity with JAX on recorded
    images), then the stand-in renders its hidden world, in an appearance drawn from the held-out
    split, through the camera to the controller, with sensor latency."""
    from deploy.export import export_onnx
    from deploy.runtime import OnnxPolicy
    from deploy.standin import MujocoStandIn, run_standin
    from meta_rl.networks import Policy, PolicySpec

    env = sim.make("cartpole-balance-pixels", batch_size=2, mode="trial")
    policy = Policy(PolicySpec.for_env(env, "gru", hidden=(16,), core_size=8))
    params = policy.init(jax.random.key(0))
    s = jax.jit(env.reset)(jax.random.split(jax.random.key(1), 2), env.sample_params(jax.random.key(2), "extrap"))
    recorded = jax.tree.map(lambda x: np.asarray(x)[None], s.obs)
    path = tmp_path / "p.onnx"
    base = env.unwrapped
    report = export_onnx(policy, params, path, {"control_dt": base.control_dt, "episodes_per_trial": 2,
                                                "episode_length": base.episode_length,
                                                "env_id": "cartpole-balance-pixels"}, parity_obs=recorded, steps=4)
    assert report.max_action_error <= 1e-5 and report.max_carry_error <= 1e-5
    onnx = OnnxPolicy(path)
    assert onnx.obs_parts["image"] == ((64, 64, 3), np.dtype(np.uint8))

    standin = MujocoStandIn("cartpole-balance-pixels", rl2=True, appearance="extrap", latency_ms=20.0, seed=3)
    obs, _ = standin.read_observation()
    assert set(obs) == {"image", "rl2"} and obs["image"].dtype == np.uint8 and obs["image"].shape == (64, 64, 3)
    nominal = MujocoStandIn("cartpole-balance-pixels", rl2=True, seed=3).read_observation()[0]["image"]
    assert np.abs(obs["image"].astype(np.int32) - nominal.astype(np.int32)).mean() > 5  # another appearance
    with pytest.raises(ValueError, match="appearance='extrap': cartpole-balance has no camera"):
        MujocoStandIn("cartpole-balance", appearance="extrap")

    # a camera that sends the wrong image size: the controller stops with the safe action, naming the part
    from deploy.runtime import Controller, ControllerStopped

    robot = MujocoStandIn("cartpole-balance-pixels", rl2=True, seed=4)
    read = robot.read_observation

    def cropped():
        obs, ts = read()
        return {**obs, "image": obs["image"][:32]}, ts

    robot.read_observation = cropped
    with pytest.raises(ControllerStopped, match=r"part 'image' of shape \[32, 64, 3\], the policy expects \[64, 64, 3\]"):
        Controller(path, robot).step()

    out = run_standin(path, "cartpole-balance-pixels", worlds=1, latency_ms=(0.0, 20.0), appearance="extrap",
                      out_dir=tmp_path / "s2s")
    world = out["results"][0]
    assert world["appearance"] == "extrap" and not world["stopped"] and len(world["episodes"]) == 2
    assert all(e["length"] == base.episode_length for e in world["episodes"])


def test_visual_transfer_script_pairs_the_same_worlds(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("visual_transfer", "scripts/visual_transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ra = np.asarray([[100.0, 100.0], [200.0, 200.0], [300.0, 300.0]], np.float32)  # trial returns 200, 400, 600
    np.savez(a / "returns.npz", **{"train/policy": ra})
    np.savez(b / "returns.npz", **{"train/policy": ra * 0.9})
    assert mod.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "ratio B/A: 0.900" in out and "paired B - A: -40.00 ± " in out
    np.savez(b / "returns.npz", **{"train/policy": ra[:2]})
    with pytest.raises(SystemExit, match="3 and 2 worlds"):
        mod.main([str(a), str(b)])
