"""World-model training's run folder: checkpoints and resume (a run killed during a checkpoint
write and resumed with --resume auto ends with the weights, summary and metrics.jsonl of a run
never interrupted; damaged checkpoints are skipped with a warning), metrics.jsonl written while
the run goes, and the tracker."""

import dataclasses
import json
import math

import pytest
from safetensors.torch import load_file

from vjepa_agent import envs
from vjepa_agent.config import WorldModelConfig, default_wm_encoder
from vjepa_agent.train import world_model as wm_train

TINY_VIT = "--encoder.dim 32 --encoder.depth 1 --encoder.heads 2 --latent-dim 16".split()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    envs.collect_rollouts(
        "CartPole-v1", 600, out=root / "state", obs="state", seed=0, progress=False
    )
    envs.collect_rollouts(
        "CartPole-v1",
        400,
        out=root / "pixels",
        obs="pixels",
        seed=0,
        size=(16, 64),
        frame_stack=4,
        grayscale=True,
        progress=False,
    )
    return root


DETERMINISTIC = lambda s: {k: v for k, v in s.items() if k != "train_seconds"}  # noqa: E731


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, extra",
    [
        ("state", ["--steps", "30", "--checkpoint-every", "10"]),
        (
            "pixels",
            [
                "--pixel-encoder",
                "jepa",
                "--steps",
                "6",
                "--checkpoint-every",
                "2",
                "--target-encoder",
                "ema",
                "--sigreg-weight",
                "0.1",
                "--batch-size",
                "4",
                "--seq-len",
                "4",
                "--rollout-steps",
                "4",
                *TINY_VIT,
            ],
        ),
    ],
)
def test_killed_during_a_checkpoint_write_then_resumed_equals_uninterrupted(
    stores, tmp_path, kind, extra, run_script
):
    common = ["--data", str(stores / kind), "--log-every", "1", *extra]
    run_script("train_world_model.py", *common, "--out", tmp_path / "whole")
    second = "20" if kind == "state" else "4"
    kill = {"VJEPA_AGENT_TEST_KILL_AT": f"world_model_before_rename:{second}"}
    cut = run_script(
        "train_world_model.py",
        *common,
        "--out",
        tmp_path / "cut",
        env=kill,
        check=False,
    )
    assert cut.returncode != 0  # SIGKILLed while writing its second checkpoint
    ckpts = tmp_path / "cut" / "checkpoints"
    assert (ckpts / f".tmp_step_{int(second):08d}").is_dir()  # the half-written one
    resumed = run_script(
        "train_world_model.py", *common, "--out", tmp_path / "cut", "--resume", "auto"
    )
    assert "resuming from step" in resumed.stdout and not list(ckpts.glob(".tmp_step_*"))
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    sa = json.loads((tmp_path / "whole" / "summary.json").read_text())
    sb = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert DETERMINISTIC(sa) == DETERMINISTIC(sb)
    # the killed run had logged past its last checkpoint: the resumed file holds each step once
    lines = (tmp_path / "whole" / "metrics.jsonl").read_text()
    steps = int(extra[extra.index("--steps") + 1])
    assert [json.loads(line)["step"] for line in lines.splitlines()] == list(range(1, steps + 1))
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == lines


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_is_skipped_with_a_warning(stores, tmp_path, run_script):
    common = ["--data", str(stores / "state"), "--out", str(tmp_path / "run"), "--log-every", "5"]
    args = [*common, "--steps", "20", "--checkpoint-every", "5", "--keep-checkpoints", "3"]
    run_script("train_world_model.py", *args)
    newest = tmp_path / "run" / "checkpoints" / "step_00000015" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    again = run_script("train_world_model.py", *common, "--steps", "20", "--resume", "auto")
    assert "skipping checkpoint" in again.stderr and "step_00000015" in again.stderr
    assert "resuming from step 10" in again.stdout
    # every checkpoint damaged: one line, no traceback
    for folder in (tmp_path / "run" / "checkpoints").glob("step_*"):
        (folder / "model.safetensors").write_bytes(b"garbage")
    args = [*common, "--steps", "20", "--resume", "auto"]
    broken = run_script("train_world_model.py", *args, check=False)
    assert broken.returncode == 2 and "no checkpoint under" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_a_diverging_run_stops_in_one_line(stores, tmp_path, run_script):
    proc = run_script(
        "train_world_model.py",
        "--data",
        str(stores / "state"),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "40",
        "--lr",
        "1e30",
        "--log-every",
        "5",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "lower --lr" in lines[0] and "Traceback" not in proc.stderr


def tiny_config(stores, kind, out, **kw) -> WorldModelConfig:
    """An in-process run: the state model (cached latents) or a tiny jepa pixel model (its own loop)."""
    base = dict(data=stores / kind, out=out, log_every=2, checkpoint_every=0)
    if kind == "pixels":
        encoder = dataclasses.replace(default_wm_encoder(), dim=32, depth=1, heads=2)
        base.update(pixel_encoder="jepa", encoder=encoder, latent_dim=16, predictor_dim=32)
        base.update(batch_size=4, seq_len=4, rollout_steps=4, eval_horizon=4)
    return WorldModelConfig(**{**base, **kw})


@pytest.mark.parametrize("kind", ["state", "pixels"])
def test_metrics_reach_the_file_while_the_run_goes(stores, tmp_path, monkeypatch, kind):
    """A run that dies after step 6 of 10 has already written the lines of steps 2, 4 and 6."""

    def die_after_6(cfg, out, done, *args, **kwargs):
        if done == 6:
            raise RuntimeError("killed after step 6")

    monkeypatch.setattr(wm_train, "_maybe_checkpoint", die_after_6)
    cfg = tiny_config(stores, kind, tmp_path / "run", steps=10, tracker="none")
    with pytest.raises(RuntimeError, match="killed after step 6"):
        wm_train.train_world_model(cfg, progress=False)
    rows = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in rows)


@pytest.mark.parametrize("kind", ["state", "pixels"])
def test_the_tensorboard_tracker_writes_events_and_none_writes_none(stores, tmp_path, kind):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for tracker in ("tensorboard", "none"):
        cfg = tiny_config(stores, kind, tmp_path / tracker, steps=4, tracker=tracker)
        wm_train.train_world_model(cfg, progress=False)
        assert len((cfg.out / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "none" / "tensorboard").exists()
    (events,) = (tmp_path / "tensorboard" / "tensorboard").rglob("events.out.tfevents*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    assert {"loss", "teacher_forcing", "lr", "effective_rank"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == [2, 4]
