"""Shapes and no-NaN for the encoder, predictor and JEPA module; position encodings."""

import pytest
import torch

from vjepa_agent.config import ENCODER_SIZES, EncoderConfig, PredictorConfig, PretrainConfig
from vjepa_agent.jepa import JEPA
from vjepa_agent.masking import mask_generator, sample_masks
from vjepa_agent.models.encoder import VideoEncoder
from vjepa_agent.models.layers import Rope3d, _rotate, grid_positions, sincos_3d
from vjepa_agent.models.predictor import MaskedPredictor

TINY = dict(dim=48, depth=2, heads=4, patch_size=8, tubelet_size=2)


@pytest.mark.parametrize("pos", ["rope", "sincos"])
@pytest.mark.parametrize("ckpt", [False, True])
def test_encoder_shapes(pos, ckpt):
    enc = VideoEncoder(EncoderConfig(**TINY, pos_embed=pos, activation_checkpointing=ckpt))
    x = torch.randn(2, 3, 4, 32, 32)
    y = enc(x)
    assert y.shape == (2, 2 * 4 * 4, 48)
    keep = torch.tensor([[0, 3, 5], [1, 2, 31]])
    z = enc(x, keep=keep)
    assert z.shape == (2, 3, 48)
    assert torch.isfinite(y).all() and torch.isfinite(z).all()
    z.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_encoder_keep_all_equals_full():
    """Encoding with keep = every index in order equals encoding the whole clip."""
    enc = VideoEncoder(EncoderConfig(**TINY)).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    keep = torch.arange(32).expand(2, -1)
    torch.testing.assert_close(enc(x), enc(x, keep=keep))


def test_sincos_and_rope_properties():
    pos = grid_positions((2, 3, 4))
    assert pos.shape == (24, 3) and pos[-1].tolist() == [1, 2, 3]
    emb = sincos_3d(pos, 48)
    assert emb.shape == (24, 48) and len({tuple(r) for r in emb.tolist()}) == 24
    # RoPE: dot products depend only on relative positions (shift invariance)
    rope = Rope3d(head_dim=16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    p1 = torch.tensor([[[1, 2, 3], [4, 0, 1]]])
    p2 = p1 + torch.tensor([3, 5, 7])

    def score(p):
        cos, sin = rope(p)
        qr = _rotate(q.expand(1, 1, 2, 16), cos, sin)[:, :, 0]
        kr = _rotate(k.expand(1, 1, 2, 16), cos, sin)[:, :, 1]
        return (qr * kr).sum()

    torch.testing.assert_close(score(p1), score(p2))
    # rotation preserves norms; leftover dims (16 - 3*4 = 4) pass through untouched
    cos, sin = rope(p1)
    x = torch.randn(1, 1, 2, 16)
    xr = _rotate(x, cos, sin)
    torch.testing.assert_close(xr.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(xr[..., 12:], x[..., 12:])


def test_predictor_returns_only_targets():
    enc_cfg = EncoderConfig(**TINY)
    pred = MaskedPredictor(enc_cfg, PredictorConfig(dim=32, depth=2, heads=4), num_mask_tokens=2)
    assert torch.count_nonzero(pred.mask_tokens) == 0  # zero-initialised
    ctx = torch.randn(2, 5, 48)
    out = pred(
        ctx, torch.randint(0, 32, (2, 5)), torch.randint(0, 32, (2, 7)), (2, 4, 4), mask_id=1
    )
    assert out.shape == (2, 7, 48) and torch.isfinite(out).all()


def test_size_presets_have_published_dims():
    assert ENCODER_SIZES["large"] == dict(dim=1024, depth=24, heads=16, mlp_ratio=4.0)
    giant = EncoderConfig(size="giant").resolved()
    assert (giant.dim, giant.depth, giant.heads) == (1408, 40, 22)
    assert abs(giant.mlp_ratio - 48 / 11) < 1e-9


def test_jepa_forward_backward_teacher_frozen():
    cfg = PretrainConfig(
        encoder=EncoderConfig(**TINY), predictor=PredictorConfig(dim=32, depth=1, heads=4)
    )
    model = JEPA(cfg)
    x = torch.randn(3, 3, 4, 32, 32)
    g = mask_generator(0, 0, 0)
    masks = [sample_masks(m, model.student.grid(x.shape), 3, g) for m in cfg.masks]
    out = model(x, masks)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["embeddings"].shape == (3, 32, 48)
    out["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert model.student.patch_embed.proj.weight.grad is not None
