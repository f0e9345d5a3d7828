"""Smoke and numeric tests of scripts/pretrain_video.py: real subprocesses, tiny models, few steps."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
# ~40k-parameter model on 4x32x32 clips: a step takes a few milliseconds.
TINY = [
    "--encoder.dim",
    "32",
    "--encoder.depth",
    "2",
    "--encoder.heads",
    "2",
    "--encoder.patch-size",
    "8",
    "--predictor.dim",
    "16",
    "--predictor.depth",
    "1",
    "--predictor.heads",
    "2",
    "--frames-per-clip",
    "4",
    "--crop-size",
    "32",
    "--batch-size",
    "4",
    "--synthetic-videos",
    "64",
    "--warmup-steps",
    "3",
    "--log-every",
    "1",
    "--monitor-every",
    "5",
]
PRETRAIN = ("pretrain_video.py", *TINY)  # run_script(*PRETRAIN, ...): the tiny pretraining run


def read_metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_loss_falls_and_teacher_does_not_collapse(tmp_path, run_script):
    out = tmp_path / "run"
    args = ["--out", out, "--max-steps", "80", "--lr", "2e-3", "--start-lr", "2e-4"]
    proc = run_script(*PRETRAIN, *args, "--batch-size", "8")
    assert proc.stdout.strip().splitlines()[-1] == str(out / "summary.json")  # path printed last
    summary = json.loads((out / "summary.json").read_text())
    losses = [m["loss"] for m in read_metrics(out)]
    assert summary["steps"] == 80 and len(losses) == 80
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.85 * first, (first, last)
    assert summary["teacher_std"] > 0.05 and summary["effective_rank"] > 2
    for key in ("final_loss", "clips_per_s", "skipped_files"):
        assert key in summary
    # run folder: resolved config, tensorboard, checkpoint, exported weights loadable without pickle
    assert (out / "config.yaml").is_file()
    assert list((out / "tensorboard").rglob("events.out.tfevents*"))
    assert (out / "checkpoints" / "step_00000080" / "trainer_state.json").is_file()
    from vjepa_agent.checkpoint import load_encoder

    encoder, meta = load_encoder(out)
    assert meta["encoder"]["dim"] == 32
    weights = load_file(str(out / "export" / "encoder.safetensors"))
    assert all(w.isfinite().all() for w in weights.values())


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path, run_script):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    common = ["--max-steps", "12", "--checkpoint-every", "6", "--keep-checkpoints", "5"]
    run_script(*PRETRAIN, "--out", str(full), *common)
    # a run that stopped after its step-6 checkpoint: same config, that checkpoint only
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(
        full / "checkpoints" / "step_00000006", resumed / "checkpoints" / "step_00000006"
    )
    proc = run_script(*PRETRAIN, "--out", str(resumed), *common, "--resume", "auto")
    assert "resumed from" in proc.stdout
    a = load_file(str(full / "checkpoints" / "step_00000012" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_00000012" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after resume"
    losses_full = [m["loss"] for m in read_metrics(full)][6:]
    losses_resumed = [m["loss"] for m in read_metrics(resumed)]
    assert losses_resumed == losses_full
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_from_step"] == 6


@pytest.mark.slow
def test_sigterm_saves_a_complete_checkpoint_and_resume_continues(tmp_path, run_script):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "pretrain_video.py"),
            *TINY,
            "--out",
            str(out),
            "--max-steps",
            "100000",
            "--checkpoint-every",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_signal"] and 0 < summary["steps"] < 100000
    step = summary["steps"]
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == [f"step_{step:08d}"]  # complete, no temporary folder left behind
    proc = run_script(
        *PRETRAIN, "--out", str(out), "--max-steps", str(step + 2), "--resume", "auto"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == step and summary["steps"] == step + 2


@pytest.mark.slow
def test_trains_on_mp4_folder_and_skips_corrupt_files(tmp_path, run_script):
    from vjepa_agent.data.synthetic import write_synthetic_mp4s

    videos = tmp_path / "videos"
    write_synthetic_mp4s(videos, n=4, frames=12, size=48, seed=0)
    (videos / "broken.mp4").write_bytes(os.urandom(2048))
    out = tmp_path / "run"
    run_script(
        *PRETRAIN, "--out", str(out), "--data", str(videos), "--max-steps", "4", "--frame-step", "2"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["skipped_files"] == 1 and summary["skipped_paths"][0].endswith("broken.mp4")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crop-size", "36"], "crop_size=36 is not divisible by patch_size=8"),
        (["--frames-per-clip", "5"], "frames_per_clip=5 is not divisible by tubelet_size=2"),
        (["--data", "/no/such/folder"], "data path '/no/such/folder' does not exist"),
        (["--resume", "/no/such/ckpt"], "checkpoint '/no/such/ckpt' does not exist"),
    ],
)
def test_bad_input_fails_in_one_line(tmp_path, args, message, run_script):
    proc = run_script(*PRETRAIN, "--out", str(tmp_path / "run"), *args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {proc.stderr.strip()[7:]}" and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_bad_mask_scale_and_empty_folder(tmp_path, run_script):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("masks:\n  - {num_blocks: 8, spatial_scale: 1.5}\n")
    proc = run_script(*PRETRAIN, "--config", str(cfg), "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "spatial_scale must be in (0, 1]" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_script(*PRETRAIN, "--data", str(empty), "--out", str(tmp_path / "r2"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(empty) in proc.stderr
    cfg.write_text("encoder: {dimm: 3}\n")
    proc = run_script(*PRETRAIN, "--config", str(cfg), "--out", str(tmp_path / "r3"), check=False)
    assert proc.returncode == 2 and "unknown config key 'encoder.dimm'" in proc.stderr


@pytest.mark.slow
def test_two_process_accelerate_run(tmp_path, run_script):
    """A real two-process DDP run on CPU (gloo): world size 2 and identical teachers on both ranks."""
    out = tmp_path / "ddp"
    args = ["--out", out, "--max-steps", "6", "--checkpoint-every", "3"]
    run_script(*PRETRAIN, *args, processes=2, timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["teacher_checksums"]) == 2
    assert summary["teacher_checksums"][0] == summary["teacher_checksums"][1]
    assert (out / "checkpoints" / "step_00000006" / "trainer_state.json").is_file()
