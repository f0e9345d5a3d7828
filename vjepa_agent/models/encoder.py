"""The video ViT. One class serves as student (sees context tokens) and teacher (sees the whole clip)."""

from __future__ import annotations

import torch
from torch import nn

from vjepa_agent.config import EncoderConfig
from vjepa_agent.models.layers import (
    PatchEmbed3d,
    Rope3d,
    Transformer,
    grid_positions,
    init_weights,
    sincos_3d,
)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Select tokens: x (B, N, D), idx (B, K) long -> (B, K, D)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class VideoEncoder(nn.Module):
    """Tubelet embedding, position, transformer: video (B, C, T, H, W) -> tokens (B, N, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        self.dim = cfg.dim
        self.patch_embed = PatchEmbed3d(cfg.in_channels, cfg.dim, cfg.patch_size, cfg.tubelet_size)
        self.rope = (
            Rope3d(cfg.dim // cfg.heads, layout=cfg.rope_layout)
            if cfg.pos_embed == "rope"
            else None
        )
        self.transformer = Transformer(
            cfg.dim,
            cfg.depth,
            cfg.heads,
            cfg.mlp_ratio,
            cfg.qkv_bias,
            cfg.activation_checkpointing,
            cfg.norm_eps,
            cfg.rope_layout,
        )
        init_weights(self)

    def grid(self, video_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a (B, C, T, H, W) video."""
        *_, t, h, w = video_shape
        p, tub = self.cfg.patch_size, self.cfg.tubelet_size
        return t // tub, h // p, w // p

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """video (B, C, T, H, W); keep (B, K) token indices to encode (None = all) -> (B, K or N, D)."""
        # 1. tubelets to tokens, with their (t, h, w) grid positions
        x = self.patch_embed(video)  # (B, N, D)
        pos = grid_positions(self.grid(video.shape), x.device).expand(
            x.shape[0], -1, -1
        )  # (B, N, 3)
        # 2. keep only the context tokens (the student's view)
        if keep is not None:
            x = gather_tokens(x, keep)
            pos = torch.gather(pos, 1, keep[..., None].expand(-1, -1, 3))
        # 3. position: added sin-cos, or RoPE inside attention
        rope = None
        if self.rope is None:
            x = x + sincos_3d(pos, self.dim, self.cfg.sincos_layout).to(x.dtype)
        else:
            rope = self.rope(pos)
        return self.transformer(x, rope)
