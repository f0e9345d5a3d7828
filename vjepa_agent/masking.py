"""3-D multiblock tube masks: which tokens the student sees (context) and which it predicts (targets).

For each sample, `num_blocks` boxes are drawn on the (T', H', W') token grid (spatial area
`spatial_scale` of the grid, aspect ratio in `aspect_ratio`, temporal extent `temporal_scale`,
random placement); their union is the target set and its complement the context.

Every sample in a batch must hold the same number of tokens. The reference implementation cuts
each sample's index list to the batch minimum in raster order, which drops bottom-right tokens
more often. Here each sample keeps a *uniformly random* subset of the batch-minimum size, so no
position is favoured; the number of dropped tokens is returned for logging.

Everything is vectorised over the batch and blocks and driven by an explicit torch.Generator, so
masks are reproducible from (seed, step, rank) — which is what makes resume bit-exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vjepa_agent import seeding
from vjepa_agent.config import MaskConfig


@dataclass
class Masks:
    """Token indices for one mask configuration; indices are sorted within each sample."""

    context: torch.Tensor
    """(B, Nc) long: tokens the student encodes."""
    target: torch.Tensor
    """(B, Nt) long: tokens the predictor must fill in."""
    dropped: int
    """Tokens dropped over the batch to equalise counts (context + target)."""

    def to(self, device) -> Masks:
        return Masks(self.context.to(device), self.target.to(device), self.dropped)


def block_masks(
    cfg: MaskConfig, grid: tuple[int, int, int], batch: int, generator: torch.Generator
) -> torch.Tensor:
    """Boolean target masks (B, T', H', W'): the union of cfg.num_blocks random boxes per sample."""
    t_n, h_n, w_n = grid
    b, k = batch, cfg.num_blocks
    # 1. box sizes: area = scale * H'W', log-uniform aspect ratio in range, clamped to the grid
    u = torch.rand(b, k, 4, generator=generator)
    lo, hi = math.log(cfg.aspect_ratio[0]), math.log(cfg.aspect_ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[..., 0])
    area = cfg.spatial_scale * h_n * w_n
    bh = torch.sqrt(area * aspect).round().clamp(1, h_n).long()  # (B, K)
    bw = torch.sqrt(area / aspect).round().clamp(1, w_n).long()
    bt = max(1, min(t_n, round(cfg.temporal_scale * t_n)))
    # 2. top-left corners uniform over valid placements
    top = (u[..., 1] * (h_n - bh + 1)).floor().long()
    left = (u[..., 2] * (w_n - bw + 1)).floor().long()
    start = (u[..., 3] * (t_n - bt + 1)).floor().long()
    # 3. union of boxes by broadcasting grid coordinates against every box
    hh = torch.arange(h_n)[None, None, :]  # (1, 1, H')
    ww = torch.arange(w_n)[None, None, :]
    tt = torch.arange(t_n)[None, None, :]
    in_h = (hh >= top[..., None]) & (hh < (top + bh)[..., None])  # (B, K, H')
    in_w = (ww >= left[..., None]) & (ww < (left + bw)[..., None])  # (B, K, W')
    in_t = (tt >= start[..., None]) & (tt < (start + bt)[..., None])  # (B, K, T')
    boxes = in_t[..., :, None, None] & in_h[..., None, :, None] & in_w[..., None, None, :]
    return boxes.any(dim=1)  # (B, T', H', W')


def random_subset(member: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of `count` uniformly chosen True entries per row of member (B, N) -> (B, count)."""
    keys = torch.rand(member.shape, generator=generator)
    keys = torch.where(member, keys, 2.0)  # non-members sort last
    idx = keys.argsort(dim=1)[:, :count]
    return idx.sort(dim=1).values


def sample_masks(
    cfg: MaskConfig, grid: tuple[int, int, int], batch: int, generator: torch.Generator
) -> Masks:
    """Draw one batch of context/target indices for a mask configuration (see module docstring)."""
    for _ in range(100):
        target = block_masks(cfg, grid, batch, generator).flatten(1)  # (B, N)
        n_tgt = int(target.sum(1).min())
        n_ctx = int((~target).sum(1).min())
        if n_tgt > 0 and n_ctx > 0:
            break
    else:
        raise ValueError(
            f"mask {cfg} leaves no context or no target on a {grid} token grid; lower spatial_scale or num_blocks"
        )
    dropped = int(target.sum() - n_tgt * batch + (~target).sum() - n_ctx * batch)
    return Masks(
        context=random_subset(~target, n_ctx, generator),
        target=random_subset(target, n_tgt, generator),
        dropped=dropped,
    )


def mask_generator(seed: int, step: int, rank: int, micro: int = 0) -> torch.Generator:
    """A generator whose stream is a pure function of (seed, step, rank, micro-batch)."""
    return seeding.generator("masks", seed, step, rank, micro)
