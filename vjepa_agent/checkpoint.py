"""Resumable training state (Accelerate step folders) and exported weights (safetensors + JSON).

Training state: `out/checkpoints/step_00000100/`, written as `.tmp_step_00000100`, checked and
renamed when complete, so a folder with the final name is always whole and finite. Resume falls
back past damaged folders to the newest one that loads. Exported weights: safetensors plus
`config.json`, loadable without pickle.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list
from accelerate.utils import load as accelerate_load
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vjepa_agent.errors import UserError, require

log = logging.getLogger("vjepa_agent.checkpoint")

STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(out: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    return [p for p in step_dirs(out) if (p / STATE_FILE).is_file()]


def step_dirs(out: str | Path) -> list[Path]:
    """Every `step_XXXXXXXX` folder of a run, complete or not, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def resolve_resume(resume: str | None, out: str | Path) -> Path | None:
    """'auto' -> newest complete checkpoint under out (None if there is none); a path -> that folder.

    For 'auto' this is only the first candidate: `load_latest_training_state` falls back to
    older checkpoints when it does not load.
    """
    if resume is None:
        return None
    if resume == "auto":
        dirs = checkpoint_dirs(out)
        return dirs[-1] if dirs else None
    path = Path(resume)
    require(
        path.is_dir(), f"checkpoint '{resume}' does not exist; pass --resume auto or a step folder"
    )
    require(
        (path / STATE_FILE).is_file(),
        f"checkpoint '{resume}' is incomplete (no {STATE_FILE}); pass an earlier step folder",
    )
    return path


def check_checkpoint(path: Path) -> str | None:
    """Why the step folder `path` cannot be resumed from (None = it looks whole and finite).

    Reads trainer_state.json and every tensor of the `model*.safetensors` files (one at a time),
    so a truncated file or a non-finite weight is caught before Accelerate loads anything.
    Sharded formats (FSDP) have no such files and are checked by loading only.
    """
    if not (path / STATE_FILE).is_file():
        return f"incomplete (no {STATE_FILE})"
    try:
        json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        return f"{STATE_FILE} does not parse ({type(e).__name__})"
    for file in sorted(path.glob("model*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    if not torch.isfinite(f.get_tensor(key)).all():
                        return f"{file.name} holds non-finite weights ('{key}')"
        except Exception as e:  # truncated or garbled: safetensors' own error types vary
            return f"{file.name} does not load ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    return None


def save_training_state(
    accelerator, out: str | Path, step: int, state: dict[str, Any], keep: int
) -> Path:
    """Write the full training state for `step`; keep the newest `keep` checkpoints.

    Written into `.tmp_step_XXXXXXXX`, read back and checked (`check_checkpoint`), then renamed:
    a folder with the final name is always whole and finite. Non-finite weights are never
    promoted (UserError, the earlier checkpoints untouched), and older checkpoints are deleted
    only after the new one is in place.
    """
    root = Path(out) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp_step_*"):  # left by a write that was killed
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    problem = None
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        _fault_point("checkpoint-written", step)
        problem = check_checkpoint(tmp)
        if problem is None:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in checkpoint_dirs(out)[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if accelerator.num_processes > 1:
        problem = broadcast_object_list([problem])[0]  # every rank stops, or none
    accelerator.wait_for_everyone()
    if problem is not None:
        kept = checkpoint_dirs(out)
        newest = f"'{kept[-1]}'" if kept else "none"
        raise UserError(
            f"the checkpoint for step {step} was not written: {problem}; "
            f"the newest good one is {newest}; "
            "lower the learning rate and resume with --resume auto"
        )
    return final


def load_training_state(accelerator, path: Path) -> dict[str, Any]:
    """Restore model/optimizer/RNG state from a step folder; returns its trainer_state.json.

    A damaged folder is a UserError. A random-state file that does not load is only a warning
    (see `_restore`).
    """
    state = _restore(accelerator, path)
    if isinstance(state, str):
        raise UserError(f"checkpoint '{path}' {state}; pass an earlier step folder")
    return state


def load_latest_training_state(accelerator, out: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """`--resume auto`: restore the newest checkpoint under out that loads -> (folder, trainer state).

    Damaged or incomplete step folders are skipped with a warning naming them; leftover
    `.tmp_step_*` folders (a write that was killed) are removed. None when there is no checkpoint
    at all; a one-line UserError when there are some and none loads.
    """
    root = Path(out) / "checkpoints"
    if accelerator.is_main_process and root.is_dir():
        for stale in sorted(root.glob(".tmp_step_*")):
            log.warning("removing '%s', left by a checkpoint write that did not finish", stale)
            shutil.rmtree(stale, ignore_errors=True)
    failed = []
    for path in reversed(step_dirs(out)):
        state = _restore(accelerator, path)
        if not isinstance(state, str):
            return path, state
        if accelerator.is_main_process:
            log.warning("skipping checkpoint '%s': it %s", path, state)
        failed.append(path.name)
    if failed:
        raise UserError(
            f"no checkpoint in '{root}' loads ({', '.join(failed)}: damaged or incomplete, see the "
            "warnings above); pass --resume with a step folder that loads, or start anew with another --out"
        )
    return None


def _restore(accelerator, path: Path) -> dict[str, Any] | str:
    """Load a step folder into the prepared objects -> its trainer state, or why it failed.

    A random-state file that does not load is a warning, not a failure: no random draw in
    training uses the global generators it restores (data order, augmentation and masks come
    from generators seeded by (seed, step, rank) or (seed, epoch, index)), so the run stays
    bit-exact without it.
    """
    problem = check_checkpoint(path)
    if problem is not None:
        return f"is damaged: {problem}"
    try:
        accelerator.load_state(str(path))
    except Exception as e:  # a failed load must never silently restart from zero
        return (
            f"could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "it was written by a different model configuration or is damaged"
        )
    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    try:
        accelerate_load(
            rng_file
        )  # what Accelerate just tried (weights_only=True); it fails silently
    except Exception as e:
        log.warning(
            "random-state file '%s' does not load (%s); ignored: the run stays bit-exact, since "
            "every random draw in training is a function of (seed, step, rank) or (seed, epoch, index)",
            rng_file,
            type(e).__name__,
        )
    return json.loads((path / STATE_FILE).read_text())


def _fault_point(name: str, step: int) -> None:
    """Test hook: SIGKILL this process at a named point of step `step`'s checkpoint write.

    Set VJEPA_AGENT_TEST_KILL_AT=NAME:STEP (tests/test_faults.py); unset, this does nothing.
    """
    if os.environ.get("VJEPA_AGENT_TEST_KILL_AT") == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------- exported weights


def save_weights(module: nn.Module, path: str | Path) -> None:
    """State dict of `module` as safetensors (contiguous CPU tensors)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path))


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load safetensors into `module`, strictly: missing or unexpected keys and shape mismatches are errors."""
    path = Path(path)
    require(path.is_file(), f"weights file '{path}' does not exist")
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise UserError(f"weights file '{path}' is not a valid safetensors file ({e})") from e
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise UserError(
            f"weights file '{path}' does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            " (was it exported with another configuration?)"
        )
    bad = [k for k in own if own[k].shape != tensors[k].shape]
    if bad:
        k = bad[0]
        raise UserError(
            f"weights file '{path}' does not match the model: '{k}' has shape {tuple(tensors[k].shape)}, "
            f"the model expects {tuple(own[k].shape)}"
        )
    module.load_state_dict(tensors, strict=True)


def write_json(obj: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    require(path.is_file(), f"'{path}' does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"'{path}' is not valid JSON ({e})") from e


def export_pretrained(model: nn.Module, cfg, folder: str | Path, step: int) -> Path:
    """Export a trained JEPA/MAE module: encoder (the teacher for JEPA), student, predictor + config.json."""
    from vjepa_agent.config import to_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = model.teacher if hasattr(model, "teacher") else model.student
    save_weights(encoder, folder / "encoder.safetensors")
    save_weights(model.student, folder / "student.safetensors")
    write_json(
        {
            "format": "vjepa_agent.encoder/1",
            "objective": cfg.objective,
            "step": step,
            "encoder": to_dict(cfg.encoder.resolved()),
            "predictor": to_dict(cfg.predictor),
            "frames_per_clip": cfg.frames_per_clip,
            "crop_size": cfg.crop_size,
            **(
                {"synthetic_object_scale": list(cfg.synthetic_object_scale)}
                if cfg.data is None
                else {}
            ),
        },
        folder / "config.json",
    )
    return folder


def load_encoder(path: str | Path, which: str = "teacher"):
    """Load a frozen-ready VideoEncoder from an export folder or a training run folder.

    `which` = "teacher" (encoder.safetensors: the EMA teacher for JEPA) or "student".
    Returns (encoder, config dict).
    """
    from vjepa_agent.config import EncoderConfig
    from vjepa_agent.models.encoder import VideoEncoder

    path = Path(path)
    require(
        path.exists(),
        f"encoder path '{path}' does not exist; pass an export folder or a run folder",
    )
    if not (path / "config.json").is_file() and (path / "export" / "config.json").is_file():
        path = path / "export"
    require(
        (path / "config.json").is_file(),
        f"'{path}' holds no exported encoder (config.json missing); train with pretrain_video.py first",
    )
    meta = read_json(path / "config.json")
    require(
        str(meta.get("format", "")).startswith("vjepa_agent.encoder"),
        f"'{path / 'config.json'}' is not a vjepa_agent encoder export",
    )
    enc_cfg = EncoderConfig(
        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["encoder"].items()}
    )
    encoder = VideoEncoder(enc_cfg)
    file = {"teacher": "encoder.safetensors", "student": "student.safetensors"}.get(which)
    require(file is not None, f"which must be 'teacher' or 'student', got '{which}'")
    load_weights(encoder, path / file)
    encoder.eval().requires_grad_(False)
    return encoder, meta


def require_same_encoder(loaded, built, path: str | Path, flags: str = "--encoder.") -> None:
    """A one-line error unless the encoder exported at `path` (config `loaded`) is the network
    `built` describes: every EncoderConfig field but the size name and activation checkpointing
    (which change no computation) equal, so its weights compute there what they computed where
    they were trained (a converted V-JEPA 2 encoder needs norm_eps 1e-6 and rope_layout vjepa2 as
    well as its sizes). The error lists the flags (`flags` + field name) that would make it so."""
    from vjepa_agent.config import to_dict

    have, want = to_dict(loaded.resolved()), to_dict(built.resolved())
    differ = [
        name
        for name, value in have.items()
        if name not in ("size", "activation_checkpointing") and want.get(name) != value
    ]
    if differ:
        first = differ[0]
        needed = " ".join(f"{flags}{n.replace('_', '-')} {have[n]}" for n in differ)
        raise UserError(
            f"the encoder in '{path}' has {first}={have[first]}, the configured one "
            f"{first}={want.get(first)}; pass {needed}"
        )


# ---------------------------------------------------------------------------- world-model loops


def save_loop_state(
    out: str | Path,
    step: int,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    state: dict[str, Any],
    keep: int,
    rank: int = 0,
    barrier=lambda: None,
) -> Path | None:
    """A world-model loop's resumable state after `step`: each module as `model*.safetensors`,
    the optimizer (`optimizer.pt`, tensors and numbers only), each rank's generators
    (`rng_<rank>.pt`) and `trainer_state.json` (`state` plus the step). Written as
    `.tmp_step_XXXXXXXX`, checked by `check_checkpoint`, renamed; then only the newest `keep`
    step folders stay. Rank 0 writes all but its peers' generators; `barrier` synchronises
    ranks (Accelerator.wait_for_everyone). Returns the folder on rank 0."""
    root = Path(out) / "checkpoints"
    tmp, final = root / f".tmp_step_{step:08d}", root / f"step_{step:08d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save({k: g.get_state() for k, g in generators.items()}, tmp / f"rng_{rank}.pt")
    barrier()
    if rank != 0:
        barrier()
        return None
    for name, module in modules.items():
        save_weights(module, tmp / f"{name}.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    write_json({**state, "step": step}, tmp / STATE_FILE)
    _fault_point("world_model_before_rename", step)
    problem = check_checkpoint(tmp)
    if problem is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        barrier()
        raise UserError(f"world-model checkpoint at step {step} {problem}; lower --lr")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in step_dirs(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_latest_loop_state(
    out: str | Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    rank: int = 0,
) -> dict[str, Any] | None:
    """Restore the newest step folder under `out` that loads (what `save_loop_state` wrote) into
    `modules`, `optimizer` and `generators`; returns its trainer state (None: no checkpoint yet).
    Damaged or incomplete folders are skipped with a warning naming them, leftovers of a kill
    during a write (`.tmp_step_*`) are removed, and when folders exist but none loads it is a
    one-line error. Nothing is unpickled: tensors load with weights_only=True."""
    root = Path(out) / "checkpoints"
    if rank == 0 and root.is_dir():
        for leftover in root.glob(".tmp_step_*"):
            log.warning("removing '%s', left by a checkpoint write that did not finish", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    tried = []
    for path in reversed(step_dirs(out)):
        problem = check_checkpoint(path)
        if problem is None:
            try:
                for name, module in modules.items():
                    load_weights(module, path / f"{name}.safetensors")
                optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
                rng = torch.load(path / f"rng_{rank}.pt", weights_only=True)
                for name, g in generators.items():
                    g.set_state(rng[name])
                return read_json(path / STATE_FILE)
            except Exception as e:  # noqa: BLE001 - any damage: fall back to the previous one
                problem = f"does not load ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        log.warning("skipping checkpoint '%s': %s", path, problem)
        tried.append(path.name)
    if tried:
        raise UserError(
            f"no checkpoint under '{root}' loads ({', '.join(tried)}); delete them to start over"
        )
    return None
