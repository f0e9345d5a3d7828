"""Building blocks of the video ViT: tubelet embedding, 3-D positions (sin-cos, RoPE), attention, MLP, block.

Shapes: video (B, C, T, H, W); tokens (B, N, D) with N = T/tubelet * H/patch * W/patch, in
(t, h, w) raster order; token positions (B, N, 3) integer (t, h, w) grid indices.
"""

from __future__ import annotations

import math

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


def sincos_3d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed 3-D sin-cos embedding of (..., 3) positions -> (..., dim).

    Each axis gets an even share of about dim/3 (time takes the remainder); V-JEPA's layout.
    """
    d_hw = 2 * (dim // 6)
    d_t = dim - 2 * d_hw
    return torch.cat(
        [
            _sincos_1d(positions[..., 0], d_t),
            _sincos_1d(positions[..., 1], d_hw),
            _sincos_1d(positions[..., 2], d_hw),
        ],
        dim=-1,
    )


class Rope3d(nn.Module):
    """3-D rotary position embedding (V-JEPA 2): the head dim splits into equal (t, h, w) parts.

    Each part (an even number of dims, floor(head_dim / 3) rounded down to even) rotates pairs of
    channels by angle position * base^(-2i/part); leftover dims are not rotated.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.part = 2 * (head_dim // 6)
        self.head_dim = head_dim
        inv_freq = 1.0 / base ** (torch.arange(0, self.part, 2, dtype=torch.float32) / self.part)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, N, 3) -> cos, sin of shape (B, 1, N, 3 * part), broadcast over heads."""
        angles = positions.float()[..., None] * self.inv_freq  # (B, N, 3, part/2)
        angles = rearrange(angles, "b n a f -> b n (a f)")
        angles = torch.cat([angles, angles], dim=-1)  # pairs (i, i + half) share an angle
        angles = rearrange(angles, "b n d -> b 1 n d")
        return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to the first cos.shape[-1] dims of x (B, heads, N, hd); the rest pass through."""
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = r // 2
    x1, x2 = x_rot[..., :half], x_rot[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
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
    """Multi-head self-attention through SDPA, with optional RoPE and an optional boolean attn mask."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
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
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
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

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(round(dim * mlp_ratio)))

    def forward(self, x, rope=None, attn_mask=None):
        x = x + self.attn(self.norm1(x), rope, attn_mask)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of blocks with optional activation checkpointing and a final LayerNorm."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
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
