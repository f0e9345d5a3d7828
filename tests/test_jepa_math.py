"""EMA arithmetic, schedules, loss, collapse monitors: numbers that can be wrong."""

import math

import pytest
import torch
from torch import nn

from vjepa_agent import schedules
from vjepa_agent.jepa import ema_update_, jepa_loss, sigreg_loss, vicreg_loss
from vjepa_agent.metrics import effective_rank, embedding_std


def test_ema_update_arithmetic():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    t0 = [p.clone() for p in teacher.parameters()]
    s0 = [p.clone() for p in student.parameters()]
    ema_update_(teacher, student, 0.9)
    for t, a, b in zip(teacher.parameters(), t0, s0):
        torch.testing.assert_close(t, 0.9 * a + 0.1 * b)
    ema_update_(teacher, student, 1.0)  # frozen
    for t, a, b in zip(teacher.parameters(), t0, s0):
        torch.testing.assert_close(t, 0.9 * a + 0.1 * b)
    ema_update_(teacher, student, 0.0)  # copy
    for t, b in zip(teacher.parameters(), s0):
        torch.testing.assert_close(t, b)
    # student untouched
    for s, b in zip(student.parameters(), s0):
        assert torch.equal(s, b)


def test_lr_schedule():
    kw = dict(total=100, warmup=10, start_lr=0.1, lr=1.0, final_lr=0.0)
    assert schedules.lr_at(0, **kw) == pytest.approx(0.1)
    assert schedules.lr_at(5, **kw) == pytest.approx(0.55)
    assert schedules.lr_at(10, **kw) == pytest.approx(1.0)
    assert schedules.lr_at(55, **kw) == pytest.approx(0.5)  # cosine midpoint
    assert schedules.lr_at(100, **kw) == pytest.approx(0.0)
    assert schedules.lr_at(55, kind="linear", **kw) == pytest.approx(0.5)
    assert schedules.lr_at(32.5, kind="linear", **kw) == pytest.approx(0.75)
    assert schedules.lr_at(90, kind="constant", **kw) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        schedules.lr_at(50, kind="nope", **kw)


def test_wd_and_ema_schedules():
    assert schedules.cosine_at(0, total=10, start=0.04, end=0.4) == pytest.approx(0.04)
    assert schedules.cosine_at(5, total=10, start=0.04, end=0.4) == pytest.approx(0.22)
    assert schedules.cosine_at(10, total=10, start=0.04, end=0.4) == pytest.approx(0.4)
    assert schedules.linear_at(0, total=10, start=0.998, end=1.0) == pytest.approx(0.998)
    assert schedules.linear_at(5, total=10, start=0.998, end=1.0) == pytest.approx(0.999)
    assert schedules.linear_at(7, total=10, start=0.99925, end=0.99925) == pytest.approx(0.99925)


def test_loss_values():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    tgt = torch.zeros(2, 2)
    assert float(jepa_loss(pred, tgt, 1.0)) == pytest.approx(2.5)
    assert float(jepa_loss(pred, tgt, 2.0)) == pytest.approx((1 + 4 + 9 + 16) / 4 / 2)


def test_collapse_monitors():
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    assert embedding_std(x) == pytest.approx(1.0, abs=0.1)
    assert effective_rank(x) > 12
    const = torch.ones(512, 16) * 3
    assert embedding_std(const) == pytest.approx(0.0)
    assert effective_rank(const) == pytest.approx(1.0)
    line = torch.randn(512, 1) * torch.randn(1, 16)
    assert effective_rank(line) == pytest.approx(1.0, abs=0.01)
    assert math.isfinite(effective_rank(torch.randn(4, 100, 16)))


@pytest.mark.parametrize("reg", [vicreg_loss, sigreg_loss])
def test_regularizers_push_a_constant_embedding_away_from_zero_loss(reg):
    """Collapse (every token the same) scores far above isotropic Gaussian tokens, with a gradient."""
    g = torch.Generator().manual_seed(0)
    gaussian = torch.randn(512, 32, generator=g)
    constant = torch.full((512, 32), 0.3, requires_grad=True)
    low_rank = torch.randn(512, 2, generator=g) @ torch.randn(2, 32, generator=g)  # 2 directions
    kw = {} if reg is vicreg_loss else {"generator": torch.Generator().manual_seed(1)}
    good, bad = float(reg(gaussian, **kw)), float(reg(constant.detach(), **kw))
    assert bad > 0.5 and good < 0.2 * bad
    assert float(reg(low_rank / low_rank.std(), **kw)) > 2 * good  # dimensional collapse costs too
    # the gradient is finite and moves the embedding (a constant is no stationary point)
    (grad,) = torch.autograd.grad(
        reg(constant + 1e-3 * torch.randn(512, 32, generator=g), **kw), constant
    )
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


@pytest.mark.parametrize("regularizer", ["vicreg", "sigreg"])
def test_jepa_adds_the_regularizer_and_freezes_the_patch_embedding(regularizer):
    """The configured term joins the loss (reported apart); a frozen tubelet embedding gets no gradient."""
    from vjepa_agent.config import EncoderConfig, PredictorConfig, PretrainConfig
    from vjepa_agent.jepa import JEPA
    from vjepa_agent.masking import mask_generator, sample_masks
    from vjepa_agent.train.pretrain import build_optimizer

    torch.manual_seed(0)
    cfg = PretrainConfig(
        encoder=EncoderConfig(dim=32, depth=1, heads=2, patch_size=8),
        predictor=PredictorConfig(dim=16, depth=1, heads=2),
        regularizer=regularizer,
        reg_weight=0.5,
        freeze_patch_embed=True,
    )
    model = JEPA(cfg)
    video = torch.randn(2, 3, 4, 32, 32)
    grid = model.student.grid(video.shape)
    masks = [sample_masks(m, grid, 2, mask_generator(0, 0, 0)) for m in cfg.masks]
    out = model(video, masks)
    assert float(out["reg_loss"].detach()) > 0
    torch.testing.assert_close(out["loss"], out["prediction_loss"] + 0.5 * out["reg_loss"])
    out["loss"].backward()
    assert all(p.grad is None for p in model.student.patch_embed.parameters())
    assert model.student.transformer.blocks[0].attn.qkv.weight.grad is not None
    optimised = {id(p) for g in build_optimizer(model, cfg).param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in model.student.patch_embed.parameters()}


def test_within_clip_options_ignore_what_is_the_same_everywhere_in_a_clip():
    """Flat-colour clips (every token of a clip alike): centred targets are zero, and the within-clip
    regularizer sees no variance at all (the full hinge, no covariance), where across the batch
    the colours' variance and covariances are what it scores."""
    from vjepa_agent.config import EncoderConfig, PredictorConfig, PretrainConfig
    from vjepa_agent.jepa import JEPA
    from vjepa_agent.masking import mask_generator, sample_masks
    from vjepa_agent.models.encoder import gather_tokens

    def build(**kw):
        torch.manual_seed(0)
        cfg = PretrainConfig(
            encoder=EncoderConfig(dim=32, depth=1, heads=2, patch_size=8),
            predictor=PredictorConfig(dim=16, depth=1, heads=2),
            regularizer="vicreg",
            **kw,
        )
        return JEPA(cfg).eval(), cfg

    colours = 3 * torch.randn(8, 3, 1, 1, 1)  # one flat colour per clip
    video = colours.expand(8, 3, 4, 32, 32).contiguous()
    model, cfg = build(center_targets=True, reg_within_clip=True)
    grid = model.student.grid(video.shape)
    masks = [sample_masks(m, grid, 8, mask_generator(0, 0, 0)) for m in cfg.masks]
    out = model(video, masks)
    with torch.no_grad():
        preds = [
            model.predictor(model.student(video, keep=m.context), m.context, m.target, grid, i)
            for i, m in enumerate(masks)
        ]
    zero_target = torch.stack([p.abs().mean() for p in preds]).mean()  # |pred - 0|
    torch.testing.assert_close(out["prediction_loss"].detach(), zero_target)
    # relu(1 - sqrt(eps)) = 0.99 and zero covariance: nothing varies inside a clip
    assert abs(float(out["reg_loss"].detach()) - 0.99) < 1e-3

    plain, _ = build()
    base = plain(video, masks)
    assert abs(float(base["reg_loss"].detach()) - 0.99) > 1.0  # across clips the colours do vary
    teacher = plain.teacher(video)
    targets = torch.nn.functional.layer_norm(teacher, teacher.shape[-1:])
    assert float(gather_tokens(targets, masks[0].target).abs().mean()) > 0.5  # uncentred: not zero
