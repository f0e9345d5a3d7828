"""Resumable training state (Accelerate step folders) and exported weights (safetensors + JSON).

Training state: `out/checkpoints/step_00000100/`, written as `.tmp_step_00000100` and renamed
when complete, so a folder with the final name is always whole. Exported weights: safetensors
plus `config.json`, loadable without pickle.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from vjepa_agent.errors import UserError, require

STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(out: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def resolve_resume(resume: str | None, out: str | Path) -> Path | None:
    """'auto' -> newest complete checkpoint under out (None if there is none); a path -> that folder."""
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


def save_training_state(
    accelerator, out: str | Path, step: int, state: dict[str, Any], keep: int
) -> Path:
    """Write the full training state for `step` atomically (tmp folder + rename); keep the newest `keep`."""
    root = Path(out) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoint_dirs(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_training_state(accelerator, path: Path) -> dict[str, Any]:
    """Restore model/optimizer/RNG state from a step folder; returns its trainer_state.json."""
    try:
        accelerator.load_state(str(path))
    except Exception as e:  # a failed load must never silently restart from zero
        raise UserError(
            f"checkpoint '{path}' could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "it was written by a different model configuration or is damaged"
        ) from e
    return json.loads((path / STATE_FILE).read_text())


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
