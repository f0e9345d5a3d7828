"""vjepa-convert: official V-JEPA / V-JEPA 2 checkpoints as encoder exports whose tokens equal the
reference model's, and the one-line errors for checkpoints that do not fit.

The fixtures in tests/data were made once, with the reference code itself, outside this
repository; they hold data only. How they were made:

1. The reference repositories were brought in as git mirrors (facebookresearch/vjepa2 at commit
   c2963a4 for V-JEPA 2, facebookresearch/jepa at commit 51c59d5 for V-JEPA), and their `src`
   folders unpacked into scratch folders outside the checkout, `git --git-dir=<mirror> archive
   HEAD src | tar -x -C <ref2>` (and `<ref1>`). V-JEPA 2's layers import timm only for its
   drop-path function, unused at drop-path rate 0; a stub package `timm.models.layers` with an
   identity `drop_path` stood in for it on PYTHONPATH.
2. A short generator script (not kept), run once per reference from this checkout's venv as
   `PYTHONPATH=<ref2>:<stub> .venv/bin/python gen.py vjepa2 tests/data` (and `PYTHONPATH=<ref1>
   .venv/bin/python gen.py vjepa tests/data`, torch 2.13.0 on CPU, float32 throughout),
   built with the reference's own `src.models.vision_transformer.VisionTransformer` two tiny
   encoders: img_size 16, patch_size 4, num_frames 8, tubelet_size 2, embed_dim 40, depth 2,
   num_heads 2 (head dim 20: three RoPE parts of 6 channels and 2 unrotated), mlp_ratio 2,
   qkv_bias, LayerNorm eps 1e-6 as in the reference's vit_* sizes; `use_rope=True` for V-JEPA 2,
   `uniform_power=True` (the sin-cos layout of V-JEPA's released models) for V-JEPA. The
   `encoder` was built after `torch.manual_seed(0)`, the `target_encoder` after seed 1, and in
   each every parameter but `pos_embed` was then redrawn (LayerNorm weights 1 + 0.2 N(0, 1),
   biases 0.2 N(0, 1), the rest 0.3 N(0, 1)), since the reference's std-0.02 initialisation makes
   attention nearly uniform and so blind to a wrong position layout. The predictor is the
   reference's `vit_predictor` (width 8, depth 1, 2 heads, 2 mask tokens) after seed 2.
3. Each model was wrapped as in the reference's training, a module with attribute `backbone`
   inside one with attribute `module`, so the state dict keys read `module.backbone.*`, and the
   checkpoint dict {encoder, predictor, target_encoder, epoch 1, loss, batch_size, world_size,
   lr} was written with `torch.save` (`<name>_tiny.pt`).
4. From `torch.Generator().manual_seed(3)`: a clip of N(0, 1) values (2, 3, 8, 16, 16) and, per
   sample, the first 20 of `torch.randperm(64)`, sorted (`keep`). In eval mode without gradients the
   reference gave `target_encoder(clip)`, `encoder(clip)` and `target_encoder(clip,
   masks=[keep])`; these, the clip and keep are `<name>_tiny_io.safetensors` (float32). The
   V-JEPA file also holds the reference's `get_3d_sincos_pos_embed(40, 4, 4,
   uniform_power=False)` table, the other sin-cos layout.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vjepa_agent.checkpoint import load_encoder, require_same_encoder
from vjepa_agent.config import ConvertConfig, EncoderConfig
from vjepa_agent.convert import convert_checkpoint
from vjepa_agent.errors import UserError
from vjepa_agent.models.layers import grid_positions, sincos_3d

DATA = Path(__file__).resolve().parent / "data"
TOLERANCE = 1e-4  # max abs difference from the reference's tokens
TINY = dict(dim=40, depth=2, heads=2, mlp_ratio=2.0, patch_size=4, frames_per_clip=8, crop_size=16)
TINY_FLAGS = [
    "--dim", "40", "--depth", "2", "--heads", "2", "--mlp-ratio", "2", "--patch-size", "4",
    "--frames-per-clip", "8", "--crop-size", "16",
]  # fmt: skip
FORMATS = {"vjepa2": "rope", "vjepa": "sincos"}  # fixture name -> --pos-embed


def reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(DATA / f"{name}_tiny_io.safetensors"))


def convert(tmp_path, name: str, **overrides) -> Path:
    cfg = ConvertConfig(
        checkpoint=DATA / f"{name}_tiny.pt",
        out=tmp_path / name,
        pos_embed=FORMATS[name],
        **{**TINY, **overrides},
    )
    return convert_checkpoint(cfg)


def max_diff(encoder, clip, expected, keep=None) -> float:
    with torch.no_grad():
        return (encoder(clip, keep=keep) - expected).abs().max().item()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_converted_encoder_tokens_equal_the_reference(tmp_path, name):
    ref = reference(name)
    encoder, meta = load_encoder(convert(tmp_path, name))  # the export as every consumer reads it
    assert max_diff(encoder, ref["clip"], ref["target_encoder"]) <= TOLERANCE
    # a subset of tokens (the student's view) keeps its positions
    assert max_diff(encoder, ref["clip"], ref["target_encoder_keep"], ref["keep"]) <= TOLERANCE
    student, _ = load_encoder(tmp_path / name, "student")  # the checkpoint's 'encoder'
    assert max_diff(student, ref["clip"], ref["encoder"]) <= TOLERANCE
    assert meta["frames_per_clip"] == 8 and meta["crop_size"] == 16
    assert meta["encoder"]["norm_eps"] == 1e-6
    assert meta["encoder"]["sincos_layout"] == ("uniform" if name == "vjepa" else "remainder")
    assert meta["converted_from"]["key"] == "target_encoder"


def test_a_checkpoint_in_the_legacy_torch_save_format_converts(tmp_path):
    """Files written with torch.save's pre-1.6 format load too (without memory-mapping)."""
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    ckpt = torch.load(DATA / "vjepa2_tiny.pt", weights_only=True)
    torch.save(ckpt, legacy / "vjepa2_tiny.pt", _use_new_zipfile_serialization=False)
    cfg = ConvertConfig(checkpoint=legacy / "vjepa2_tiny.pt", out=tmp_path / "x", **TINY)
    encoder, _ = load_encoder(convert_checkpoint(cfg))
    ref = reference("vjepa2")
    assert max_diff(encoder, ref["clip"], ref["target_encoder"]) <= TOLERANCE


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_equality_check_catches_a_wrong_conversion(tmp_path, name):
    """The fixture tells a faithful conversion from wrong ones: q and k swapped, or this library's
    own position layouts and LayerNorm epsilon in place of the reference's."""
    ref = reference(name)
    encoder, _ = load_encoder(convert(tmp_path, name))
    qkv = encoder.transformer.blocks[0].attn.qkv
    with torch.no_grad():
        q, k, v = qkv.weight.chunk(3)
        qkv.weight.copy_(torch.cat([k, q, v]))
        qb, kb, vb = qkv.bias.chunk(3)
        qkv.bias.copy_(torch.cat([kb, qb, vb]))
    assert max_diff(encoder, ref["clip"], ref["target_encoder"]) > 0.1
    # this library's own layout instead of the reference's: far off
    field, value = ("rope_layout", "halves") if name == "vjepa2" else ("sincos_layout", "remainder")
    assert (
        max_diff(rebuilt(tmp_path / name, **{field: value}), ref["clip"], ref["target_encoder"])
        > 0.1
    )
    # LayerNorm epsilon 1e-5 instead of 1e-6: measurable, though within the tolerance here (the
    # fixture's activations have variances near 1, where epsilon hardly counts)
    assert (
        max_diff(rebuilt(tmp_path / name, norm_eps=1e-5), ref["clip"], ref["target_encoder"]) > 1e-6
    )


def rebuilt(export: Path, **changes):
    """The exported encoder's weights in an encoder whose config differs by `changes`."""
    from vjepa_agent.models.encoder import VideoEncoder

    exported, _ = load_encoder(export)
    encoder = VideoEncoder(EncoderConfig(**{**vars(exported.cfg), **changes})).eval()
    encoder.load_state_dict(exported.state_dict())
    return encoder


def test_sincos_layouts_equal_the_reference_tables():
    ref, pos = reference("vjepa"), grid_positions((4, 4, 4))
    ckpt = torch.load(DATA / "vjepa_tiny.pt", weights_only=True)
    table = ckpt["target_encoder"]["module.backbone.pos_embed"][0]
    assert (sincos_3d(pos, 40, "uniform") - table).abs().max() < 1e-6
    assert (
        sincos_3d(pos, 40, "half_time") - ref["pos_embed_uniform_power_false"]
    ).abs().max() < 1e-6
    assert (sincos_3d(pos, 40, "remainder") - table).abs().max() > 0.1


def run_cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """vjepa-convert in this process -> (exit code, stdout, stderr)."""
    from vjepa_agent.cli.convert_checkpoint import main

    monkeypatch.setattr(sys, "argv", ["vjepa-convert", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_key_encoder_exports_the_student(tmp_path, monkeypatch, capsys):
    ref = reference("vjepa2")
    args = ["--checkpoint", DATA / "vjepa2_tiny.pt", "--out", tmp_path / "s", "--key", "encoder"]
    code, out, _ = run_cli(monkeypatch, capsys, *args, *TINY_FLAGS)
    assert code == 0 and out.strip() == str(tmp_path / "s")
    encoder, meta = load_encoder(tmp_path / "s")
    assert max_diff(encoder, ref["clip"], ref["encoder"]) <= TOLERANCE
    assert max_diff(encoder, ref["clip"], ref["target_encoder"]) > 100 * TOLERANCE
    assert meta["converted_from"]["key"] == "encoder"


def edited(tmp_path, name: str, edit) -> Path:
    """A copy of fixture `name` with `edit(target_encoder state dict)` applied."""
    ckpt = torch.load(DATA / f"{name}_tiny.pt", weights_only=True)
    edit(ckpt["target_encoder"])
    path = tmp_path / f"edited_{name}.pt"
    torch.save(ckpt, path)
    return path


def _drop(state):
    del state["module.backbone.blocks.1.mlp.fc2.bias"]


def _add(state):
    state["module.backbone.blocks.0.attn.q_norm.weight"] = torch.ones(20)


def _reshape(state):
    state["module.backbone.blocks.0.attn.proj.weight"] = torch.zeros(40, 20)


@pytest.mark.parametrize(
    "edit, flags, words",
    [
        (_drop, [], ["has no 'blocks.1.mlp.fc2.bias'", "['target_encoder']"]),
        (_add, [], ["holds 'blocks.0.attn.q_norm.weight'", "no place for"]),
        (_reshape, [], ["'blocks.0.attn.proj.weight' has shape (40, 20)", "expects (40, 40)"]),
        (None, ["--mlp-ratio", "4"], ["'blocks.0.mlp.fc1.weight' has shape (80, 40)"]),
        (None, ["--depth", "3"], ["has no 'blocks.2.norm1.weight'"]),
        (None, ["--pos-embed", "sincos"], ["has no 'pos_embed'", "--pos-embed rope"]),
    ],
    ids=["missing", "unexpected", "shape", "shape-by-flag", "depth", "no-pos-embed"],
)
def test_a_checkpoint_that_does_not_fit_is_a_one_line_error(
    tmp_path, monkeypatch, capsys, edit, flags, words
):
    path = edited(tmp_path, "vjepa2", edit) if edit else DATA / "vjepa2_tiny.pt"
    args = ["--checkpoint", path, "--out", tmp_path / "x", *TINY_FLAGS, *flags]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "x").exists()  # nothing written


def test_sincos_table_of_other_sizes_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    args = ["--checkpoint", DATA / "vjepa_tiny.pt", "--out", tmp_path / "x", *TINY_FLAGS]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--pos-embed", "sincos", "--crop-size", "32")
    assert code == 2 and err.count("\n") == 1
    assert "'pos_embed' has shape (1, 64, 40)" in err and "(1, 256, 40)" in err
    # a table that is no sin-cos layout (learned, interpolated)
    path = edited(
        tmp_path, "vjepa", lambda s: s["module.backbone.pos_embed"].mul_(1.1)
    )  # fmt: skip
    args = ["--checkpoint", path, "--out", tmp_path / "x", *TINY_FLAGS, "--pos-embed", "sincos"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "matches none of the sin-cos layouts" in err


def test_not_a_checkpoint_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((DATA / "vjepa2_tiny.pt").read_bytes()[:5000])
    a_list = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], a_list)
    no_target = tmp_path / "no_target.pt"
    torch.save({"encoder": {"w": torch.zeros(1)}, "predictor": {}}, no_target)
    not_a_state = tmp_path / "not_a_state.pt"
    torch.save({"target_encoder": [1, 2]}, not_a_state)
    cases = {
        tmp_path / "absent.pt": "does not exist",
        text: "does not load as a torch.save file",
        truncated: "does not load as a torch.save file",
        a_list: "holds a list, not a dict",
        no_target: "has no 'target_encoder' (it holds: encoder, predictor)",
        not_a_state: "'target_encoder' is not a state dict of tensors",
    }
    for path, words in cases.items():
        code, _, err = run_cli(monkeypatch, capsys, "--checkpoint", path, "--size", "tiny")
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert words in err, err
    code, _, err = run_cli(monkeypatch, capsys, "--size", "tiny")
    assert code == 2 and "pass --checkpoint" in err
    code, _, err = run_cli(monkeypatch, capsys, "--checkpoint", text)
    assert code == 2 and "pass --size" in err


def test_rope_checkpoint_with_a_pos_embed_table_converts_with_a_warning(tmp_path, caplog):
    """V-JEPA 2's own loader ignores a `pos_embed` beside RoPE; so does the conversion, aloud."""
    table = torch.load(DATA / "vjepa_tiny.pt", weights_only=True)["target_encoder"]
    path = edited(
        tmp_path, "vjepa2", lambda s: s.update({"module.backbone.pos_embed": table["module.backbone.pos_embed"]})
    )  # fmt: skip
    cfg = ConvertConfig(checkpoint=path, out=tmp_path / "x", pos_embed="rope", **TINY)
    with caplog.at_level(logging.WARNING, logger="vjepa_agent.convert"):
        encoder, _ = load_encoder(convert_checkpoint(cfg))
    assert "'pos_embed' table, which a RoPE encoder does not use" in caplog.text
    ref = reference("vjepa2")
    assert max_diff(encoder, ref["clip"], ref["target_encoder"]) <= TOLERANCE


def test_world_model_init_needs_the_converted_encoder_config(tmp_path):
    """train_world_model --encoder-init refuses, in one line naming the flag, an encoder config
    that would compute something else with the converted weights."""
    exported, _ = load_encoder(convert(tmp_path, "vjepa2"))
    same = EncoderConfig(**{**vars(exported.cfg), "activation_checkpointing": True})
    require_same_encoder(exported.cfg, same, tmp_path / "vjepa2")
    other = EncoderConfig(**{**vars(exported.cfg), "rope_layout": "halves"})
    with pytest.raises(UserError, match="pass --encoder.rope-layout vjepa2"):
        require_same_encoder(exported.cfg, other, tmp_path / "vjepa2")


def test_the_probe_and_the_world_model_take_the_export(tmp_path):
    """vjepa-probe --encoder and vjepa-train-world-model --encoder-init on a converted export."""
    import dataclasses

    from vjepa_agent import envs
    from vjepa_agent.config import ProbeConfig, WorldModelConfig
    from vjepa_agent.probe import run_eval_probe
    from vjepa_agent.train.world_model import train_world_model

    export = convert(tmp_path, "vjepa2")
    probe = ProbeConfig(encoder=str(export), out=tmp_path / "probe", epochs=1, position=False)
    probe.synthetic_train, probe.synthetic_val = 32, 16
    summary = run_eval_probe(probe)  # at the export's 8 frames of 16 px
    assert summary["num_train"] == 32 and summary["num_val"] == 16
    data = tmp_path / "store"
    envs.collect_rollouts("CartPole-v1", 120, out=data, size=16, frame_stack=2, progress=False)
    encoder, _ = load_encoder(export)
    wm = WorldModelConfig(
        data=data, out=tmp_path / "wm", steps=2, encoder=encoder.cfg, encoder_init=str(export),
        latent_dim=8, predictor_dim=16, predictor_depth=1, seq_len=4, rollout_steps=2,
        eval_horizon=2, tracker="none", checkpoint_every=0,
    )  # fmt: skip
    model, _ = train_world_model(wm, progress=False)
    torch.testing.assert_close(model.encoder.vit.state_dict(), encoder.state_dict())
    # this library's default LayerNorm epsilon would compute something else: one line, the flag
    other = dataclasses.replace(wm, encoder=dataclasses.replace(encoder.cfg, norm_eps=1e-5))
    with pytest.raises(UserError, match="pass --encoder.norm-eps 1e-06"):
        train_world_model(other, progress=False)


def test_export_config_is_plain_json(tmp_path):
    meta = json.loads((convert(tmp_path, "vjepa") / "config.json").read_text())
    assert meta["format"] == "vjepa_agent.encoder/1" and meta["predictor"] is None
    assert meta["converted_from"] == {
        "checkpoint": str(DATA / "vjepa_tiny.pt"),
        "key": "target_encoder",
        "format": "V-JEPA (sin-cos)",
        "epoch": 1,
    }


def test_console_entry_point():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((DATA.parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vjepa-convert"] == "vjepa_agent.cli.convert_checkpoint:main"
    assert (DATA.parents[1] / "scripts" / "convert_checkpoint.py").is_file()
