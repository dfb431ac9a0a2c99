"""Run-folder faults (issue 22, items 4, 5, 7, 8, 9): a second writer, a torn metrics line, damaged
checkpoints, refused or not-started folders, failed writes, Ctrl-C, wall time across resumes, the
progress rate and a finished run rerun. One tiny RL² bandit run is trained once and copied per test."""

import dataclasses
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from proteus import runs
from proteus.checkpoint import Checkpoints, CorruptCheckpoint
from proteus.runs import RunFolderError, RunInterrupted, RunLock, RunLocked, read_metrics, train_run
from tests.test_runs import SMALL, SPEC  # 4 updates of 640 steps


@pytest.fixture(scope="module")
def trainer():
    return runs.build(SPEC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trainer):
    """A run stopped after 3 of its 4 updates: checkpoints 2 and 3 are kept."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train_run(SPEC, out, checkpoint_every=1, progress=False, max_updates=3, trainer=trainer)
    return out


@pytest.fixture
def run(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def _console():
    return Console(file=io.StringIO(), width=400)


def _resume(out, trainer, **kw):
    console = _console()
    summary = train_run(SPEC, out, checkpoint_every=1, progress=False, trainer=trainer, console=console, **kw)
    return summary, console.file.getvalue()


def test_a_second_writer_is_refused(run, trainer):
    with RunLock(run):
        with pytest.raises(RunLocked, match=rf"another process \(PID {os.getpid()} on host .*kill {os.getpid()}"):
            _resume(run, trainer)
    assert [r["update"] for r in read_metrics(run)] == [1, 2, 3]
    assert not (run / ".lock").exists()


def test_a_stale_lock_is_taken_over(run, trainer):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "h", "started": "then"}))
    summary, said = _resume(run, trainer)
    assert summary["updates"] == 4
    assert f"took over the stale lock {run / '.lock'} of PID {dead.pid}" in said
    assert not (run / ".lock").exists()


def test_a_torn_metrics_line_is_dropped_and_resume_goes_on(run, trainer):
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"update": 4, "env_steps": 25')
    assert [r["update"] for r in read_metrics(run)] == [1, 2, 3]
    summary, said = _resume(run, trainer)
    assert "dropped a torn last line" in said and summary["updates"] == 4
    assert [r["update"] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_a_corrupt_latest_checkpoint_falls_back_to_the_kept_one(run, trainer):
    meta = run / "checkpoints" / "3" / "default" / "_METADATA"
    meta.write_text("garbage{")
    summary, said = _resume(run, trainer)
    assert f"step 3 is unreadable: {meta}: not valid JSON" in said
    assert "resuming" in said and "from its checkpoint at update 2/4" in said
    assert summary["updates"] == 4 and Checkpoints(run / "checkpoints").steps() == [3, 4]
    assert [r["update"] for r in read_metrics(run)] == [1, 2, 3, 4]
    assert (run / "checkpoints-damaged" / "3" / "default" / "_METADATA").read_text() == "garbage{"


def test_a_truncated_array_file_is_named(run, trainer):
    (data,) = (run / "checkpoints" / "3" / "default" / "d").iterdir()
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    ck = Checkpoints(run / "checkpoints")
    try:
        with pytest.raises(CorruptCheckpoint, match=rf"step 3 is unreadable: {data}: .*not valid"):
            ck.restore(trainer.init(runs.jax.random.key(0)), 3)
    finally:
        ck.close()


@pytest.mark.parametrize("every", [0, -2, 2.5, True])
def test_a_bad_checkpoint_every_is_named_and_makes_no_folder(tmp_path, every):
    with pytest.raises(ValueError, match=rf"checkpoint_every={every!r}: must be an integer >= 1"):
        train_run(SPEC, tmp_path / "run", checkpoint_every=every, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_folder_whose_run_never_started_takes_the_corrected_command(tmp_path, trainer):
    out = tmp_path / "run"
    out.mkdir()
    other = dataclasses.replace(SPEC, config=dataclasses.replace(SMALL, lr=SMALL.lr * 2))
    (out / "config.json").write_text(json.dumps(other.to_json()))
    (out / "metrics.jsonl").write_text("")
    summary, said = _resume(out, trainer, max_updates=1)
    assert summary["updates"] == 1 and "never completed an update (differs in config.lr)" in said
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == SMALL.lr


def test_out_under_a_file_is_a_clear_refusal(tmp_path, trainer):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match=rf"cannot write the run folder {tmp_path / 'file' / 'sub'}: "):
        train_run(SPEC, tmp_path / "file" / "sub", progress=False, trainer=trainer)


def test_a_failed_write_during_the_run_names_the_path(run, trainer):
    shutil.rmtree(run / "policy")
    (run / "policy").write_text("in the way")
    with pytest.raises(RunFolderError, match=rf"cannot write the run folder {run}: {run / 'policy'}: File exists"):
        _resume(run, trainer)
    assert not (run / ".lock").exists()


def test_ctrl_c_in_a_chunk_says_where_and_how_to_resume(run, trainer, monkeypatch):
    from proteus.cli import train_main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "run_chunk", interrupted)
    with pytest.raises(RunInterrupted, match=r"resumes from its checkpoint at update 3/4\. Run again to resume: ") as e:
        _resume(run, trainer)
    command = str(e.value).split("Run again to resume: ")[1]
    argv = shlex.split(command)
    assert argv[:3] == ["proteus", "train", "rl2"]
    cmd = train_main(argv[2:])
    assert (cmd.env, cmd.out, cmd.seed, cmd.backend, cmd.checkpoint_every) == (SPEC.env, run, SPEC.seed, "auto", 1)
    assert cmd.config == SPEC.config
    assert not (run / ".lock").exists()


def test_ctrl_c_while_saving_leaves_a_whole_checkpoint(run, trainer, monkeypatch):
    save = Checkpoints.save

    def save_with_ctrl_c(self, step, tree):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands in the middle of the save
        save(self, step, tree)

    monkeypatch.setattr(Checkpoints, "save", save_with_ctrl_c)
    with pytest.raises(RunInterrupted, match=r"checkpoint at update 4/4"):
        _resume(run, trainer)
    monkeypatch.undo()
    ck = Checkpoints(run / "checkpoints")
    try:
        assert ck.steps() == [3, 4] and int(ck.restore(trainer.init(runs.jax.random.key(0))).update) == 4
    finally:
        ck.close()
    assert json.loads((run / "policy" / "spec.json").read_text())["algo"] == "rl2"


def test_wall_time_continues_on_resume(run, trainer):
    rows = read_metrics(run)
    rows[-1]["wall_s"] = 1e6
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _resume(run, trainer)
    assert read_metrics(run)[-1]["wall_s"] >= 1e6


def test_a_finished_run_is_not_built_again(run, monkeypatch):
    def no(*a, **k):
        raise AssertionError("built or restored a finished run")

    monkeypatch.setattr(runs, "build", no)
    monkeypatch.setattr(runs, "Checkpoints", no)
    console = _console()
    summary = train_run(SPEC, run, progress=False, max_updates=3, console=console)
    assert "already trained (3/4 updates): nothing to do" in console.file.getvalue()
    assert summary["updates"] == 3 and summary["resumed"] and summary["env_steps"] == 3 * 640
    assert summary["final_return"] == [r["episode_return"] for r in read_metrics(run)][-1]


def test_the_progress_rate_is_the_run_average_not_the_last_chunk():
    rate = runs._Rate()
    rate.add(10_000, 1.0)
    assert rate.add(100, 1.0) == "5,050 steps/s"
