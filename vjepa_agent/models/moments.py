"""Object moments: a fixed pixel encoder for scenes of a few flat-coloured objects on a background.

    enc = ObjectMoments(frame_shape=(3, 4, 64, 64))
    enc.fit(frames)          # (B, C, T, H, W) uint8 from the data: colours and feature scales
    z = enc(frames)          # (B, K * T * 6) standardised moments and their frame-to-frame changes

Why: a frozen random ViT's tokens, flattened and reduced by PCA, encode an object by *where* it
is on the token grid, so a latent fitted where the data is loses the object elsewhere (CartPole:
the pole's angle is read 10x worse once the cart drifts 0.3 m from where the data put it; see
docs/experiments.md). Image moments are equivariant to translation instead: an object's centroid moves with
it and its second moments (spread, orientation) do not change, so the latent is a smooth, almost
linear function of positions and angles everywhere on screen, and a small predictor models it
from random-policy data, as it does a state vector.

Steps (per frame of the stack):
1. ink = (background - pixel) / 255, a C-vector per pixel (0 on the background).
2. Unmix the ink into K colour masks: each object colour is one ink direction in colour space
   (anti-aliased edges are blends with the background, so they keep the direction and only
   shrink), and mask = clamp(pinv(directions) @ ink, 0).
3. Per mask: mass, centroid (x, y), and the central second moments (xx, xy, yy), on coordinates
   in [-1, 1].
4. The last frame's moments and the T - 1 changes between consecutive frames (velocities get
   their own dimensions), each standardised with the data's mean and std.
Everything is fitted from the data's pixels by `fit`: the background is the most frequent colour,
the K = C ink directions are a magnitude-weighted k-means of the ink directions of the non-
background pixels, and the standardisation is the data's.
"""

from __future__ import annotations

import torch
from torch import nn

MOMENTS = ("mass", "x", "y", "xx", "xy", "yy")
_INK_THRESHOLD = 0.1  # ink magnitude (of sqrt(C)) below which a pixel counts as background
_EPS = 1e-4  # mass floor (in pixels): an absent object has centroid 0, not NaN


def ink_directions(ink: torch.Tensor, k: int, iterations: int = 20) -> torch.Tensor:
    """Unit colour directions (k, C) of ink vectors (P, C): farthest-point seeds, then k-means on
    unit directions weighted by ink magnitude (anti-aliased blends weigh less)."""
    mag = ink.norm(dim=1)
    keep = mag > _INK_THRESHOLD
    if not keep.any():
        return torch.eye(ink.shape[1])[:k]
    d, w = ink[keep] / mag[keep, None], mag[keep]
    centres = [d[w.argmax()]]
    for _ in range(k - 1):
        dist = torch.stack([(d - c).norm(dim=1) for c in centres]).min(0).values
        centres.append(d[(dist * w).argmax()])
    c = torch.stack(centres)  # (k, C)
    for _ in range(iterations):
        assign = (d @ c.T).argmax(1)
        sums = torch.zeros_like(c).index_add_(0, assign, d * w[:, None])
        empty = sums.norm(dim=1) < 1e-8
        sums[empty] = c[empty]  # a colour no pixel chose keeps its seed
        c = sums / sums.norm(dim=1, keepdim=True)
    return c


class ObjectMoments(nn.Module):
    """uint8 frames (B, C, T, H, W) -> standardised moments (B, K * T * 6), K = C colour masks."""

    def __init__(self, frame_shape: tuple[int, ...]):
        super().__init__()
        c, t, h, w = frame_shape
        self.k, self.frames = c, t
        self.out_dim = self.k * t * len(MOMENTS)
        self.register_buffer("background", torch.full((c,), 255.0))
        self.register_buffer("unmix", torch.eye(c))  # (K, C)
        self.register_buffer("feature_mean", torch.zeros(self.out_dim))
        self.register_buffer("feature_std", torch.ones(self.out_dim))
        self.register_buffer("xs", torch.linspace(-1, 1, w))
        self.register_buffer("ys", torch.linspace(-1, 1, h))

    def raw(self, frames: torch.Tensor) -> torch.Tensor:
        """Unstandardised moments (B, K * T * 6) of uint8 frames (B, C, T, H, W)."""
        b, c, t, h, w = frames.shape
        # 1-2. ink -> colour masks: masks = unmix @ (background - pixel) / 255, clamped at 0
        offset = (self.unmix @ self.background / 255.0).view(1, -1, 1)  # (1, K, 1)
        flat = frames.reshape(b, c, t * h * w).float()
        masks = (offset - (self.unmix / 255.0) @ flat).clamp_min_(0).view(b, -1, t, h, w)
        # 3. moments from the marginals (and the row-weighted column sums for xy)
        col, row = masks.sum(-2), masks.sum(-1)  # (B, K, T, W), (B, K, T, H)
        mass = col.sum(-1)  # (B, K, T)
        norm = mass + _EPS
        mx, my = col @ self.xs / norm, row @ self.ys / norm
        xx = col @ self.xs**2 / norm - mx**2
        yy = row @ self.ys**2 / norm - my**2
        xy = (masks @ self.xs) @ self.ys / norm - mx * my
        moments = torch.stack([mass / (h * w), mx, my, xx, xy, yy], dim=-1)  # (B, K, T, 6)
        return moments.flatten(1)

    def motion(self, raw: torch.Tensor) -> torch.Tensor:
        """Per-frame moments (B, K * T * 6) -> the last frame's and the T - 1 frame-to-frame
        changes, same shape: a linear, invertible change that gives velocities their own
        dimensions, so standardising scales them by their own spread (a cart's step is ~1 % of
        its range of positions, and a loss on positions alone barely sees it)."""
        m = raw.view(raw.shape[0], self.k, self.frames, len(MOMENTS))
        parts = [m[:, :, -1:], m[:, :, 1:] - m[:, :, :-1]]  # (B, K, 1, 6), (B, K, T - 1, 6)
        return torch.cat(parts, dim=2).flatten(1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return (self.motion(self.raw(frames)) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def fit(self, frames: torch.Tensor, max_pixels: int = 2_000_000) -> dict[str, list]:
        """Fit background, colour directions and feature scales to frames (B, C, T, H, W) uint8.
        Returns what it found (background colour, ink directions), for the log."""
        c = frames.shape[1]
        last = frames[:, :, -1].permute(0, 2, 3, 1).reshape(-1, c)  # (P, C) pixels of last frames
        if len(last) > max_pixels:
            step = len(last) // max_pixels + 1
            last = last[::step]
        codes = (last.long() * 256 ** torch.arange(c)).sum(1)  # one integer per colour
        colours, counts = torch.unique(codes, return_counts=True)
        code = int(colours[counts.argmax()])
        self.background.copy_(torch.tensor([(code >> (8 * i)) & 255 for i in range(c)]))
        ink = (self.background - last.float()) / 255.0
        directions = ink_directions(ink, self.k)  # (K, C)
        self.unmix.copy_(torch.linalg.pinv(directions.T))  # ink = directions.T @ masks
        feats = torch.cat(
            [self.motion(self.raw(frames[i : i + 512])) for i in range(0, len(frames), 512)]
        )
        self.feature_mean.copy_(feats.mean(0))
        self.feature_std.copy_(feats.std(0).clamp_min(1e-3))
        return {"background": self.background.tolist(), "ink_directions": directions.tolist()}
