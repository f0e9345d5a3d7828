"""Official V-JEPA / V-JEPA 2 checkpoints as this library's encoder exports.

The training code of V-JEPA (sin-cos positions) and V-JEPA 2 (3-D RoPE) saves one `torch.save`
dict per checkpoint, holding the `encoder`, `target_encoder` and `predictor` state dicts with keys
such as `module.backbone.blocks.0.attn.qkv.weight` (`module.` from DistributedDataParallel,
`backbone.` from its multi-mask wrapper). `convert_checkpoint` reads one encoder of it, strictly,
into a `VideoEncoder` and writes an export folder like `pretrain_video.py`'s (encoder.safetensors,
student.safetensors, config.json) that `load_encoder`, `vjepa-probe --encoder` and
`vjepa-train-world-model --encoder-init` take.

The encoder is the same network, key for key: `patch_embed.*`, `blocks.N.*` (our
`transformer.blocks.N.*`), `norm.*` (our `transformer.norm.*`), the fused qkv in the same (q, k,
v; heads; head dim) order. What differs is set in its EncoderConfig: LayerNorm epsilon 1e-6,
V-JEPA 2's RoPE pair layout (`rope_layout="vjepa2"`), and for V-JEPA the sin-cos layout that
reproduces the checkpoint's own `pos_embed` table (`sincos_layout`, found by comparing the table
with each layout). So the converted encoder's tokens equal the reference model's (tested within
1e-4 on tiny models in both formats, tests/test_convert.py); with sin-cos positions at the
converted --frames-per-clip and --crop-size, since at other sizes the reference interpolates its
table while this encoder computes the positions of the new grid.

The predictor is not converted: its architecture is V-JEPA's, not this library's MaskedPredictor.
Every mismatch is a one-line `UserError` naming the key: a missing or unexpected key, a shape
that the configured size does not have, a file that is not such a checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import torch

from vjepa_agent.checkpoint import save_weights, write_json
from vjepa_agent.config import ConvertConfig, EncoderConfig, to_dict
from vjepa_agent.errors import UserError, require
from vjepa_agent.models.encoder import VideoEncoder
from vjepa_agent.models.layers import grid_positions, sincos_3d

log = logging.getLogger("vjepa_agent.convert")

SINCOS_LAYOUTS = ("uniform", "half_time", "remainder")
"""Sin-cos layouts tried against a V-JEPA checkpoint's pos_embed, in this order."""
SINCOS_TOLERANCE = 1e-5
"""Largest difference from a layout's table at which a pos_embed counts as that layout (the
reference computes it in float64 and stores float32, as this library does)."""
WRAPPER_PREFIXES = ("module.", "backbone.")
"""Leading key parts of the reference's wrappers, dropped before the keys are matched."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded without pickle (`weights_only=True`); a one-line error when the
    file is missing, damaged, or holds something else than a dict."""
    path = Path(path)
    require(path.is_file(), f"checkpoint '{path}' does not exist")
    try:  # memory-mapped where the file's format allows it: a ViT-g's tensors stay on disk
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        ckpt = None
    try:
        if ckpt is None:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled objects beyond tensors
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(
            f"checkpoint '{path}' does not load as a torch.save file of tensors "
            f"({type(e).__name__}: {first})"
        ) from e
    require(
        isinstance(ckpt, dict),
        f"checkpoint '{path}' holds a {type(ckpt).__name__}, not a dict with 'encoder', "
        "'target_encoder' and 'predictor' state dicts",
    )
    return ckpt


def reference_state(ckpt: dict[str, Any], key: str, where: str) -> dict[str, torch.Tensor]:
    """ckpt[key] with the wrapper prefixes (`module.`, `backbone.`) dropped: reference name ->
    tensor. `where` names the file in errors."""
    found = ", ".join(sorted(map(str, ckpt))[:8])
    require(key in ckpt, f"checkpoint '{where}' has no '{key}' (it holds: {found})")
    state = ckpt[key]
    require(
        isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()),
        f"checkpoint '{where}': '{key}' is not a state dict of tensors",
    )
    out: dict[str, torch.Tensor] = {}
    originals: dict[str, str] = {}
    for name, tensor in state.items():
        short = str(name)
        while short.startswith(WRAPPER_PREFIXES):
            short = short.split(".", 1)[1]
        require(
            short not in out,
            f"checkpoint '{where}': '{key}' holds both '{originals.get(short)}' and '{name}'",
        )
        out[short], originals[short] = tensor, str(name)
    return out


_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def our_name(reference_name: str) -> str:
    """This library's parameter name for a reference encoder's parameter name."""
    if (m := _BLOCK.match(reference_name)) is not None:
        return f"transformer.blocks.{m.group(1)}.{m.group(2)}"
    if reference_name.startswith("norm."):
        return "transformer." + reference_name
    return reference_name


def reference_name(ours: str) -> str:
    """The reference encoder's parameter name for one of this library's (the inverse of `our_name`)."""
    return ours.removeprefix("transformer.")


def sincos_layout_of(table: torch.Tensor, grid: tuple[int, int, int], dim: int) -> str | None:
    """The `sincos_layout` whose table equals `table` (N, dim) on `grid`, within SINCOS_TOLERANCE."""
    positions = grid_positions(grid)
    for layout in SINCOS_LAYOUTS:
        try:
            ours = sincos_3d(positions, dim, layout)
        except ValueError:  # half_time needs dim divisible by 8
            continue
        if (ours - table.float()).abs().max().item() <= SINCOS_TOLERANCE:
            return layout
    return None


def convert_encoder(
    state: dict[str, torch.Tensor],
    enc: EncoderConfig,
    grid: tuple[int, int, int],
    where: str,
) -> VideoEncoder:
    """A VideoEncoder of config `enc` holding the reference encoder weights `state` (names without
    wrapper prefixes), strictly: every parameter filled, every tensor used, every shape equal.
    With sin-cos positions, `state['pos_embed']` settles `sincos_layout`. `where` names the file
    and key in errors ("'vitl.pt' ['target_encoder']")."""
    state = dict(state)
    if enc.pos_embed == "sincos":
        require(
            "pos_embed" in state,
            f"{where} has no 'pos_embed'; a V-JEPA 2 (RoPE) checkpoint converts with --pos-embed rope",
        )
        table = state.pop("pos_embed")
        n = grid[0] * grid[1] * grid[2]
        require(
            tuple(table.shape) == (1, n, enc.dim),
            f"{where}: 'pos_embed' has shape {tuple(table.shape)}, --frames-per-clip and "
            f"--crop-size give {(1, n, enc.dim)} ({grid[0]} x {grid[1]} x {grid[2]} tokens); "
            "pass the sizes the model was trained at",
        )
        layout = sincos_layout_of(table[0], grid, enc.dim)
        require(
            layout is not None,
            f"{where}: 'pos_embed' matches none of the sin-cos layouts "
            f"({', '.join(SINCOS_LAYOUTS)}) within {SINCOS_TOLERANCE:g}; this encoder computes "
            "its positions and cannot hold a learned or interpolated table",
        )
        enc = dataclasses.replace(enc, sincos_layout=layout)
    elif "pos_embed" in state:
        # V-JEPA 2's own loader drops it too (its RoPE encoder has no such parameter)
        state.pop("pos_embed")
        log.warning(
            "%s holds a 'pos_embed' table, which a RoPE encoder does not use: ignored; "
            "a V-JEPA (sin-cos) checkpoint converts with --pos-embed sincos",
            where,
        )
    encoder = VideoEncoder(enc)
    own = encoder.state_dict()
    ours = {our_name(k): v for k, v in state.items()}
    missing = [k for k in own if k not in ours]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(
            f"{where} has no '{reference_name(missing[0])}'{more}, which the configured encoder "
            f"(dim {enc.dim}, depth {enc.depth}, heads {enc.heads}) has; check --size / --depth"
        )
    unexpected = [k for k in state if our_name(k) not in own]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise UserError(
            f"{where} holds '{unexpected[0]}'{more}, which the configured encoder "
            f"(dim {enc.dim}, depth {enc.depth}, heads {enc.heads}) has no place for; "
            "check --size / --depth"
        )
    for k, target in own.items():
        got = tuple(ours[k].shape)
        require(
            got == tuple(target.shape),
            f"{where}: '{reference_name(k)}' has shape {got}, the configured encoder "
            f"(dim {enc.dim}, patch {enc.patch_size}, tubelet {enc.tubelet_size}, mlp_ratio "
            f"{enc.mlp_ratio:g}) expects {tuple(target.shape)}; check --size and the flags",
        )
    encoder.load_state_dict({k: ours[k].float() for k in own}, strict=True)
    return encoder.eval().requires_grad_(False)


def convert_checkpoint(cfg: ConvertConfig) -> Path:
    """Convert cfg.checkpoint into the export folder cfg.out; returns it.

    encoder.safetensors holds the `cfg.key` encoder, student.safetensors the checkpoint's
    `encoder` (the one trained by gradient; the `cfg.key` weights again when the checkpoint has
    no `encoder`), config.json the encoder config (V-JEPA's layouts included), the clip size, and
    where the weights came from.
    """
    cfg.validate()
    path = Path(cfg.checkpoint)
    ckpt = read_checkpoint(path)
    enc_cfg = cfg.encoder_config()
    grid = (
        cfg.frames_per_clip // enc_cfg.tubelet_size,
        cfg.crop_size // enc_cfg.patch_size,
        cfg.crop_size // enc_cfg.patch_size,
    )

    def convert(key: str) -> VideoEncoder:
        state = reference_state(ckpt, key, str(path))
        return convert_encoder(state, enc_cfg, grid, f"checkpoint '{path}' ['{key}']")

    encoder = convert(cfg.key)
    if cfg.key != "encoder" and "encoder" in ckpt:
        student = convert("encoder")
    else:
        student = encoder
        if cfg.key != "encoder":
            log.info("'%s' holds no 'encoder': student.safetensors repeats '%s'", path, cfg.key)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(encoder, out / "encoder.safetensors")
    save_weights(student, out / "student.safetensors")
    epoch = ckpt.get("epoch")
    write_json(
        {
            "format": "vjepa_agent.encoder/1",
            "objective": "jepa",
            "step": None,
            "encoder": to_dict(encoder.cfg),
            "predictor": None,  # not converted (see the module docstring)
            "frames_per_clip": cfg.frames_per_clip,
            "crop_size": cfg.crop_size,
            "converted_from": {
                "checkpoint": str(path),
                "key": cfg.key,
                "format": "V-JEPA 2 (RoPE)" if cfg.pos_embed == "rope" else "V-JEPA (sin-cos)",
                "epoch": epoch if isinstance(epoch, int) else None,
            },
        },
        out / "config.json",
    )
    return out
