"""Mask statistics: counts, coverage of every position, no positional bias from equalising counts."""

import torch

from vjepa_agent.config import MaskConfig
from vjepa_agent.masking import block_masks, mask_generator, random_subset, sample_masks

GRID = (4, 8, 8)


def test_counts_disjoint_and_sorted():
    g = mask_generator(1, 2, 0)
    for cfg in (MaskConfig(8, 0.15), MaskConfig(2, 0.7)):
        m = sample_masks(cfg, GRID, 16, g)
        assert m.context.shape[0] == m.target.shape[0] == 16
        for c, t in zip(m.context, m.target):
            assert len(set(c.tolist()) & set(t.tolist())) == 0
            assert torch.all(c[1:] > c[:-1]) and torch.all(t[1:] > t[:-1])
        assert m.context.max() < 4 * 64 and m.target.max() < 4 * 64
        assert m.dropped >= 0


def test_blocks_span_time_and_cover_expected_area():
    g = mask_generator(0, 0, 0)
    masks = block_masks(MaskConfig(1, 0.25), GRID, 200, g)  # (B, T, H, W)
    assert torch.equal(masks, masks[:, :1].expand_as(masks))  # full temporal extent: tubes
    area = masks[:, 0].flatten(1).float().sum(1).mean()
    assert 12 <= area <= 20  # 0.25 * 64 = 16 tokens per block, up to rounding of h and w
    # short-range config: union of 8 blocks at 0.15 covers roughly 1 - 0.85^8 ~ 0.73 (overlaps vary)
    frac = block_masks(MaskConfig(8, 0.15), GRID, 200, g).float().mean()
    assert 0.55 < frac < 0.85


def test_every_position_is_covered_over_many_draws():
    g = mask_generator(0, 1, 0)
    counts_t = torch.zeros(4 * 64)
    counts_c = torch.zeros(4 * 64)
    for _ in range(20):
        m = sample_masks(MaskConfig(8, 0.15), GRID, 32, g)
        counts_t += torch.bincount(m.target.flatten(), minlength=256)
        counts_c += torch.bincount(m.context.flatten(), minlength=256)
    assert (counts_t > 0).all() and (counts_c > 0).all()


def test_equalising_counts_has_no_positional_bias():
    """Raster-order truncation would keep early indices far more often; random subsets keep all alike."""
    g = torch.Generator().manual_seed(0)
    member = torch.ones(4000, 100, dtype=torch.bool)
    idx = random_subset(member, 50, g)
    freq = torch.bincount(idx.flatten(), minlength=100).float() / 4000
    assert abs(freq.mean() - 0.5) < 1e-6
    assert freq.min() > 0.45 and freq.max() < 0.55  # uniform, within sampling noise (std ~0.008)
    first_half, second_half = freq[:50].mean(), freq[50:].mean()
    assert abs(first_half - second_half) < 0.02


def test_target_keep_rate_is_uniform_over_positions():
    """Given a position is masked, its chance to survive equalisation does not depend on where it is."""
    g = mask_generator(3, 0, 0)
    masked = torch.zeros(256)
    kept = torch.zeros(256)
    for _ in range(30):
        full = block_masks(MaskConfig(8, 0.15), GRID, 32, g).flatten(1)
        n = int(full.sum(1).min())
        idx = random_subset(full, n, g)
        masked += full.float().sum(0)
        kept += torch.bincount(idx.flatten(), minlength=256).float()
    rate = (kept / masked).view(4, 8, 8).mean(0)  # (H', W')
    top_left, bottom_right = rate[:4, :4].mean(), rate[4:, 4:].mean()
    assert abs(top_left - bottom_right) < 0.05


def test_same_seed_same_masks():
    a = sample_masks(MaskConfig(8, 0.15), GRID, 4, mask_generator(5, 7, 1))
    b = sample_masks(MaskConfig(8, 0.15), GRID, 4, mask_generator(5, 7, 1))
    c = sample_masks(MaskConfig(8, 0.15), GRID, 4, mask_generator(5, 8, 1))
    assert torch.equal(a.context, b.context) and torch.equal(a.target, b.target)
    assert not torch.equal(a.target, c.target) or a.target.shape != c.target.shape
