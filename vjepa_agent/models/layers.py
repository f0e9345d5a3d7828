"""Building blocks of the video ViT: tubelet embedding, 3-D positions (sin-cos, RoPE), attention, MLP, block.

Shapes: video (B, C, T, H, W); tokens (B, N, D) with N = T/tubelet * H/patch * W/patch, in
(t, h, w) raster order; token positions (B, N, 3) integer (t, h, w) grid indices.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

# ---------------------------------------------------------------------------- positions


def grid_positions(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """Integer (t, h, w) coordinates of every token of a (T', H', W') grid in raster order: (N, 3)."""
    t, h, w = (torch.arange(n, device=device) for n in grid)
    return torch.stack(torch.meshgrid(t, h, w, indexing="ij"), dim=-1).reshape(-1, 3)


def _sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos features of positions (...,) -> (..., dim); dim even."""
    omega = 1.0 / 10000 ** (
        torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim // 2)
    )
    angle = pos.double()[..., None] * omega
    return torch.cat([angle.sin(), angle.cos()], dim=-1).float()


SincosLayout = Literal["remainder", "half_time", "uniform"]


def sincos_3d(
    positions: torch.Tensor, dim: int, layout: SincosLayout = "remainder"
) -> torch.Tensor:
    """Fixed 3-D sin-cos embedding of (..., 3) positions -> (..., dim): the (t, h, w) features
    side by side, each axis's sines then cosines.

    How dim is shared between the axes (`EncoderConfig.sincos_layout`): remainder (this library's
    default) gives h and w 2 * floor(dim / 6) each and time the rest; half_time (V-JEPA's
    `uniform_power=False`) gives time dim / 2 and h and w dim / 4 each; uniform (V-JEPA's
    `uniform_power=True`, its released models) gives every axis 2 * ceil(dim / 6) and cuts the
    concatenation to dim.
    """
    if layout == "remainder":
        d_hw = 2 * (dim // 6)
        parts = (dim - 2 * d_hw, d_hw, d_hw)
    elif layout == "half_time":
        if dim % 8:
            raise ValueError(f"sincos layout half_time needs dim divisible by 8, got {dim}")
        parts = (dim // 2, dim // 4, dim // 4)
    elif layout == "uniform":
        parts = (2 * math.ceil(dim / 6),) * 3
    else:
        raise ValueError(f"unknown sincos layout '{layout}'")
    emb = torch.cat([_sincos_1d(positions[..., a], d) for a, d in enumerate(parts)], dim=-1)
    return emb[..., :dim]


RopeLayout = Literal["halves", "vjepa2"]


class Rope3d(nn.Module):
    """3-D rotary position embedding (V-JEPA 2): the head dim splits into equal (t, h, w) parts.

    Each part (an even number of dims, floor(head_dim / 3) rounded down to even) rotates pairs of
    channels by angle position * base^(-2i/part); leftover dims are not rotated. Where the
    channels of the parts lie (`EncoderConfig.rope_layout`):

    - halves (this library's default): the 3 * part rotated dims split in two halves, channel i
      paired with channel i + 3 * part / 2 at one angle; each half holds the t, h, w frequencies
      side by side.
    - vjepa2 (V-JEPA 2's released models, exactly): the parts lie one after the other (t, then h,
      then w), each rotating adjacent channels (2j, 2j + 1); channel c of a part turns at
      frequency (c mod part / 2), the part's part / 2 frequencies repeated twice across it, so the
      two channels of a pair turn at different rates.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, layout: RopeLayout = "halves"):
        super().__init__()
        if layout not in ("halves", "vjepa2"):
            raise ValueError(f"unknown rope layout '{layout}'")
        self.part = 2 * (head_dim // 6)
        self.head_dim = head_dim
        self.layout = layout
        # base^(-i / (part/2)), i < part/2, computed as V-JEPA 2 does (identical float32 values)
        exponent = torch.arange(self.part // 2, dtype=torch.float32) / (self.part / 2.0)
        self.register_buffer("inv_freq", 1.0 / base**exponent, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, N, 3) -> cos, sin of shape (B, 1, N, 3 * part), broadcast over heads."""
        angles = positions.float()[..., None] * self.inv_freq  # (B, N, 3, part/2)
        if self.layout == "halves":
            angles = rearrange(angles, "b n a f -> b n (a f)")
            angles = torch.cat([angles, angles], dim=-1)  # pairs (i, i + half) share an angle
        else:  # each axis's frequencies twice over its own part, the parts in (t, h, w) order
            angles = rearrange(torch.cat([angles, angles], dim=-1), "b n a f -> b n (a f)")
        angles = rearrange(angles, "b n d -> b 1 n d")
        return angles.cos(), angles.sin()


def _rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: RopeLayout = "halves"
) -> torch.Tensor:
    """Apply RoPE to the first cos.shape[-1] dims of x (B, heads, N, hd); the rest pass through.

    Pairs (i, i + r/2) for the halves layout, adjacent pairs (2j, 2j + 1) for vjepa2 (`Rope3d`).
    """
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    if layout == "halves":
        half = r // 2
        x1, x2 = x_rot[..., :half], x_rot[..., half:]
        rotated = torch.cat([-x2, x1], dim=-1)
    else:
        x1, x2 = x_rot.unflatten(-1, (-1, 2)).unbind(-1)
        rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


# ---------------------------------------------------------------------------- layers


class PatchEmbed3d(nn.Module):
    """Conv3d tubelets: (B, C, T, H, W) -> (B, N, D)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, tubelet_size: int):
        super().__init__()
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(video), "b d t h w -> b (t h w) d")


class Attention(nn.Module):
    """Multi-head self-attention through SDPA, with optional RoPE (its pairs laid out as
    `rope_layout`, see `Rope3d`) and an optional boolean attn mask."""

    def __init__(
        self, dim: int, heads: int, qkv_bias: bool = True, rope_layout: RopeLayout = "halves"
    ):
        super().__init__()
        self.heads = heads
        self.rope_layout = rope_layout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if x.shape[1] == 1 and attn_mask is None:
            # one token attends only to itself (softmax over one key is 1): the output is its value
            dim = x.shape[-1]
            bias = self.qkv.bias[2 * dim :] if self.qkv.bias is not None else None
            return self.proj(F.linear(x, self.qkv.weight[2 * dim :], bias))
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if rope is not None:
            cos, sin = rope
            q, k = _rotate(q, cos, sin, self.rope_layout), _rotate(k, cos, sin, self.rope_layout)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, d)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
        rope_layout: RopeLayout = "halves",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias, rope_layout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(round(dim * mlp_ratio)))

    def forward(self, x, rope=None, attn_mask=None):
        x = x + self.attn(self.norm1(x), rope, attn_mask)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of blocks with optional activation checkpointing and a final LayerNorm (every
    LayerNorm with epsilon `norm_eps`; `rope_layout` as in `Rope3d`)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        activation_checkpointing: bool = False,
        norm_eps: float = 1e-5,
        rope_layout: RopeLayout = "halves",
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, qkv_bias, norm_eps, rope_layout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.activation_checkpointing = activation_checkpointing

    def forward(self, x, rope=None, attn_mask=None):
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, rope, attn_mask, use_reentrant=False)
            else:
                x = block(x, rope, attn_mask)
        return self.norm(x)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear/conv weights, zero biases, unit LayerNorms; scale residual outputs by depth."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv3d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for tr in (m for m in module.modules() if isinstance(m, Transformer)):
        for i, block in enumerate(tr.blocks):
            block.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))
