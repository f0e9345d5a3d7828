"""Fault injection on scripts/pretrain_video.py: divergence, non-finite steps, kills during a
checkpoint write, damaged and tampered checkpoints. Real processes, tiny models, few steps."""

import json
import logging
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pretrain import PRETRAIN, read_metrics

from vjepa_agent.errors import UserError
from vjepa_agent.jepa import ema_update_
from vjepa_agent.metrics import effective_rank, embedding_std

# checkpoints at 4, 8, 12 and log lines at 3, 6, 9, 12: the step-4 and step-8 checkpoints fall
# inside a log window, so resuming from them must restore the window's earlier losses
COMMON = ["--max-steps", "12", "--checkpoint-every", "4", "--log-every", "3"]
POISON = {"VJEPA_AGENT_TEST_NAN_GRAD_STEP": "3"}  # NaN gradients at step 3, before a checkpoint
# fields of summary.json that measure time or say how the run was started
NOT_DETERMINISTIC = {"clips_per_s", "train_seconds", "resumed_from_step"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, run_script):
    """An uninterrupted 12-step run with NaN gradients at step 3 and every checkpoint kept."""
    out = tmp_path_factory.mktemp("faults") / "full"
    run_script(*PRETRAIN, "--out", str(out), *COMMON, "--keep-checkpoints", "5", env=POISON)
    return out


def weights(folder: Path, file: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(folder / file))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def copy_checkpoint(src: Path, out: Path, step: int) -> Path:
    name = f"step_{step:08d}"
    return Path(shutil.copytree(src / "checkpoints" / name, out / "checkpoints" / name))


def error_line(proc) -> str:
    """The one-line error a failed run ends with (warnings and progress bars may come before)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    return lines[-1]


class Payload:
    """A pickle that creates `marker` when unpickled (what a tampered state file could do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------------------- in-process


def test_monitors_report_nan_and_warn_on_nonfinite_input(caplog):
    tokens = torch.randn(2, 16, 8)
    assert math.isfinite(embedding_std(tokens)) and 1 <= effective_rank(tokens) <= 8
    for value in (float("nan"), float("inf")):
        bad = tokens.clone()
        bad[0, 3, 1] = value
        with caplog.at_level(logging.WARNING, logger="vjepa_agent.metrics"):
            caplog.clear()
            assert math.isnan(embedding_std(bad)) and math.isnan(effective_rank(bad))
        assert len(caplog.records) == 2 and "non-finite" in caplog.text
    value = effective_rank(tokens * 1e30)  # finite, but squares overflow in the SVD: no exception
    assert math.isnan(value) or value >= 1


def test_ema_skip_flag_leaves_the_teacher_unchanged():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    before = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 0.9, skip=torch.tensor(1.0))
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    reference = torch.nn.Linear(4, 3)
    reference.load_state_dict(teacher.state_dict())
    ema_update_(reference, student, 0.9)  # the float path
    ema_update_(teacher, student, 0.9, skip=torch.tensor(0.0))
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), teacher.parameters()))


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from vjepa_agent import checkpoint as ckpt

    try:
        accelerator = Accelerator(cpu=True)
        model = accelerator.prepare(torch.nn.Linear(3, 2))
        ckpt.save_training_state(accelerator, tmp_path, 1, {}, keep=1)
        with torch.no_grad():
            model.weight[0, 0] = float("nan")
        with pytest.raises(UserError, match="step 2 was not written: model.safetensors holds"):
            ckpt.save_training_state(accelerator, tmp_path, 2, {}, keep=1)
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001"]
        assert torch.isfinite(weights(tmp_path / "checkpoints" / "step_00000001")["weight"]).all()
    finally:
        AcceleratorState._reset_state(True)  # later tests build their own Accelerator


def test_train_step_reads_no_device_value_even_when_it_skips(monkeypatch):
    """Skipping is masked on the device: no Python-level item()/bool()/float() on a tensor in
    train_step (reads inside C++ kernels are not seen), apart from the mask bookkeeping, which
    runs on host tensors before they move to the device."""
    import traceback

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from vjepa_agent.config import EncoderConfig, PredictorConfig, PretrainConfig
    from vjepa_agent.train.pretrain import build_model, build_optimizer, train_step

    cfg = PretrainConfig(
        encoder=EncoderConfig(dim=32, depth=2, heads=2, patch_size=8),
        predictor=PredictorConfig(dim=16, depth=1, heads=2),
        frames_per_clip=4,
        crop_size=32,
    )
    try:
        accelerator = Accelerator(cpu=True)
        torch.manual_seed(0)
        model = build_model(cfg)
        model, optimizer = accelerator.prepare(model, build_optimizer(model, cfg))
        core = accelerator.unwrap_model(model)
        params = [p for m in core.trainable_modules() for p in m.parameters() if p.requires_grad]
        video = [torch.rand(4, 3, 4, 32, 32)]
        train_step(accelerator, model, optimizer, params, video, cfg, 0, 0.99)  # optimizer state
        reads = []
        for name in ("item", "__bool__", "__float__", "__int__", "__index__", "tolist"):
            original = getattr(torch.Tensor, name)

            def spy(self, *args, _original=original, **kwargs):
                caller = traceback.extract_stack()[-2].filename
                if not caller.endswith("masking.py"):
                    reads.append(caller)
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, spy)
        teacher = [p.clone() for p in core.teacher.parameters()]
        out = train_step(accelerator, model, optimizer, params, video, cfg, 1, 0.99, True)
        monkeypatch.undo()
        assert reads == []
        assert float(out["bad"]) == 1.0
        assert all(torch.equal(a, b) for a, b in zip(teacher, core.teacher.parameters()))
    finally:
        AcceleratorState._reset_state(True)


# ---------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_diverging_run_exits_2_and_keeps_its_finite_checkpoint(tmp_path, run_script):
    out = tmp_path / "run"
    args = ["--lr", "1e5", "--max-steps", "40", "--checkpoint-every", "5", "--log-every", "10"]
    proc = run_script(*PRETRAIN, "--out", str(out), *args, "--keep-checkpoints", "1", check=False)
    line = error_line(proc)
    assert line.startswith("error: training diverged") and "lower --lr (now 100000)" in line
    # skipped steps never reach the weights: every checkpoint written was finite, and the one
    # rotation kept is named in the error
    kept = sorted((out / "checkpoints").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("step_"), kept
    assert f"newest checkpoint: step {int(kept[0].name[5:])}" in line
    assert all(torch.isfinite(w).all() for w in weights(kept[0]).values())
    assert json.loads((kept[0] / "trainer_state.json").read_text())["skipped_steps"] > 0
    assert not (out / "summary.json").exists()


@pytest.mark.slow
def test_nan_gradients_on_one_step_are_skipped_and_counted(full_run, tmp_path, run_script):
    # the 12-step run went on past the bad step 3 and counted it
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["skipped_steps"] == 1
    assert math.isfinite(summary["final_loss"])
    logged = {m["step"]: m for m in read_metrics(full_run)}
    assert math.isnan(logged[3]["grad_norm"]) and math.isfinite(logged[6]["grad_norm"])
    assert [logged[s]["skipped_steps"] for s in (3, 6, 9, 12)] == [1, 1, 1, 1]
    # a skipped step changes nothing: weights, teacher and optimizer state after step 6 are
    # those after step 5
    out = tmp_path / "run"
    poison_6 = {"VJEPA_AGENT_TEST_NAN_GRAD_STEP": "6"}
    run_script(
        *PRETRAIN, "--out", str(out), "--max-steps", "6", "--checkpoint-every", "1", env=poison_6
    )
    step5, step6 = out / "checkpoints" / "step_00000005", out / "checkpoints" / "step_00000006"
    assert_same_weights(weights(step5), weights(step6))
    opt5, opt6 = (torch.load(p / "optimizer.bin", weights_only=True) for p in (step5, step6))
    for key, s5 in opt5["state"].items():
        for name in s5:
            assert torch.equal(s5[name], opt6["state"][key][name]), (key, name)


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_resume_is_bit_exact(full_run, tmp_path, run_script):
    out = tmp_path / "run"
    args = ["--out", str(out), *COMMON, "--keep-checkpoints", "1"]
    kill = {**POISON, "VJEPA_AGENT_TEST_KILL_AT": "checkpoint-written:8"}
    proc = run_script(*PRETRAIN, *args, check=False, env=kill)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL after writing, before the rename
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [".tmp_step_00000008", "step_00000004"]  # the old one is still there
    stale = out / "checkpoints" / ".tmp_step_00000010"  # as left by an earlier kill
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    proc = run_script(*PRETRAIN, *args, "--resume", "auto", env=POISON)
    for name in (".tmp_step_00000008", ".tmp_step_00000010"):
        assert f"removing '{out / 'checkpoints' / name}'" in proc.stderr
    assert f"resumed from {out / 'checkpoints' / 'step_00000004'} at step 4" in proc.stdout
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000012"]
    # bit-exact: weights and optimizer state, the exported teacher, every logged number
    final = "checkpoints/step_00000012"
    assert_same_weights(weights(full_run / final), weights(out / final))
    a, b = (torch.load(p / final / "optimizer.bin", weights_only=True) for p in (full_run, out))
    for key in a["state"]:
        for name in a["state"][key]:
            assert torch.equal(a["state"][key][name], b["state"][key][name])
    export = "export/encoder.safetensors"
    assert (full_run / export).read_bytes() == (out / export).read_bytes()
    timing = {"clips_per_s", "data_wait_fraction"}
    strip = [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(full_run)]
    got = [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(out)]
    assert json.dumps(got) == json.dumps(strip)  # json: NaN == NaN
    # summary.json equals the uninterrupted run's in every deterministic field
    full = json.loads((full_run / "summary.json").read_text())
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from_step"] == 4 and full.keys() == resumed.keys()
    for key in full.keys() - NOT_DETERMINISTIC:
        assert json.dumps(resumed[key]) == json.dumps(full[key]), key


@pytest.mark.slow
def test_truncated_newest_checkpoint_is_skipped_with_a_warning(full_run, tmp_path, run_script):
    out = tmp_path / "run"
    copy_checkpoint(full_run, out, 4)
    newest = copy_checkpoint(full_run, out, 8)
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    proc = run_script(*PRETRAIN, "--out", str(out), *COMMON, "--resume", "auto", env=POISON)
    assert f"skipping checkpoint '{newest}'" in proc.stderr and "model.safetensors" in proc.stderr
    assert "resumed from" in proc.stdout and "step_00000004 at step 4" in proc.stdout
    final = "checkpoints/step_00000012"
    assert_same_weights(weights(full_run / final), weights(out / final))
    # nothing loads: one line naming them, exit code 2
    out = tmp_path / "nothing"
    (copy_checkpoint(full_run, out, 4) / "trainer_state.json").unlink()  # incomplete
    newest = copy_checkpoint(full_run, out, 8)
    (newest / "model.safetensors").write_bytes(data[:100])
    line = error_line(
        run_script(*PRETRAIN, "--out", str(out), *COMMON, "--resume", "auto", check=False)
    )
    assert "no checkpoint in" in line and "step_00000008, step_00000004" in line


@pytest.mark.slow
def test_tampered_pickles_are_never_executed(full_run, tmp_path, run_script):
    probe = tmp_path / "payload-works"
    pickle.loads(pickle.dumps(Payload(probe)))  # unpickled without protection, it writes
    assert probe.exists()
    # the pickles of a checkpoint are optimizer.bin and random_states_0.pkl: both are tampered
    ckpt = full_run / "checkpoints" / "step_00000008"
    pickled = {"optimizer.bin", "random_states_0.pkl"}
    assert {p.name for p in ckpt.iterdir()} == pickled | {"model.safetensors", "trainer_state.json"}
    # a tampered random state: ignored with a warning, and the run stays bit-exact
    marker = tmp_path / "executed-rng"
    out = tmp_path / "rng"
    ckpt = copy_checkpoint(full_run, out, 8)
    (ckpt / "random_states_0.pkl").write_bytes(pickle.dumps(Payload(marker)))
    proc = run_script(*PRETRAIN, "--out", str(out), *COMMON, "--resume", "auto", env=POISON)
    assert "random_states_0.pkl' does not load" in proc.stderr and "bit-exact" in proc.stderr
    assert not marker.exists()
    final = "checkpoints/step_00000012"
    assert_same_weights(weights(full_run / final), weights(out / final))
    # a tampered optimizer state: the checkpoint is refused (here the only one: one-line error)
    marker = tmp_path / "executed-optimizer"
    out = tmp_path / "optimizer"
    ckpt = copy_checkpoint(full_run, out, 8)
    torch.save(Payload(marker), ckpt / "optimizer.bin")
    proc = run_script(*PRETRAIN, "--out", str(out), *COMMON, "--resume", "auto", check=False)
    line = error_line(proc)
    assert "no checkpoint in" in line and "step_00000008" in line
    assert "could not be loaded (UnpicklingError" in proc.stderr  # the warning before it
    assert not marker.exists()
