"""Procedurally generated videos: the embedded default dataset (no download).

Each video shows one *main* object and 0-2 smaller *distractor* objects over a drifting, textured
colour background. Objects are discs, squares, triangles or crosses, each filled with its own
stripe, checker or ring texture, slowly spinning. Distractors move with a smoothly varying velocity
and bounce off the walls; the main object is larger, is drawn on top, and travels in one of four
directions (right, left, down, up) along a straight line with a smoothly varying speed, placed so
that it never reaches a wall within the clip.

What carries the label. `label = kind * 4 + direction` (16 classes, `num_classes`): the shape kind
of the main object and its direction of motion. Both are properties of the predictable content:
the shape persists from frame to frame and the motion is constant in direction, so a model that
predicts the next frames' content (in latent space or in pixels) has to represent them. Content
depends only on (seed, split, index): every epoch sees the same video.

The nuisance (`noise` in [0, 1]). Per frame, independently: a per-pixel high-frequency noise
texture plus a brightness/colour flicker drawn independently for each cell of a 4x4 grid
(bilinearly blended). They are mixed in as

    video = (1 - a) * content + a * nuisance,   a = 0.75 * noise,   nuisance in [0, 1]

so noise=0 is clean and noise=1 gives the nuisance three times the weight of the content. The
nuisance is fresh for every (epoch, frame, region), so it cannot be predicted from other frames
or other regions: a pixel-reconstruction objective must spend capacity on it (and still pays an
irreducible loss), while a latent-prediction objective can learn to ignore it. Comparing linear
probes of the label under increasing `noise` therefore separates the two objectives.

The main object's size (`object_scale`: its radius as a range of fractions of the frame). The
shape kind is half of the label, so it must be readable by the encoder being compared: with the
ViT's 8-pixel patches at 64 px, the shape has to be a pattern *over* tokens (which token holds
object and which background), not detail inside one or two of them. The first design,
`OBJECT_SCALE_SMALL` (0.14-0.2, kept selectable), spans 2.2-3.2 patches across; the kind there is
visible to a small CNN on single frames but not learnable by the compared ViT at the
comparison's budget *even with labels* (docs/video_jepa.md), so no self-supervised objective can
be judged on it. `OBJECT_SCALE_LARGE` (0.24-0.3) spans 3.8-4.8 patches, and its travel over the
clip (30-70 % of the free span, >= 7.5 px) still crosses about a patch or more. Which scale a
comparison uses is decided by the supervised ceiling (the same encoder trained with the labels
at the same budget clears the random initialisation by a wide margin), never by the result of
an objective being compared.

Splits. `split="pretrain" | "probe_train" | "probe_test"` is mixed into every seed, so the three
sets are disjoint draws.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vjepa_agent.data.video import (
    center_square_box,
    check_crop_args,
    crop_resize_normalize,
    random_resized_crop_box,
    write_mp4,
)
from vjepa_agent.errors import UserError, require
from vjepa_agent.seeding import generator

KINDS = ("disc", "square", "triangle", "cross")
DIRECTIONS = ("right", "left", "down", "up")
SPLITS = ("pretrain", "probe_train", "probe_test")
NUM_CLASSES = len(KINDS) * len(DIRECTIONS)
OBJECT_SCALE_SMALL = (0.14, 0.2)
"""The first design's main-object radius range (fraction of the frame side)."""
OBJECT_SCALE_LARGE = (0.24, 0.3)
"""A main object spanning about 4-5 patches of 8 px at 64 px (see the module docstring)."""
NOISE_WEIGHT = 0.75
"""Weight of the nuisance at noise=1 (the content keeps 1 - NOISE_WEIGHT)."""

_DIRECTION_XY = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))  # image coordinates, y down
_HFLIP_DIRECTION = (1, 0, 2, 3)  # a horizontal flip swaps right and left; all kinds are symmetric


def label_name(label: int) -> str:
    """'triangle-left' for a label of the synthetic videos."""
    return f"{KINDS[label // len(DIRECTIONS)]}-{DIRECTIONS[label % len(DIRECTIONS)]}"


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _uniform(g: torch.Generator, low: float, high: float, shape: tuple = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def _fold(p: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Reflect positions into [low, high]: a free trajectory becomes one that bounces off walls."""
    span = high - low
    if span <= 0:
        return torch.full_like(p, (low + high) / 2)
    q = torch.remainder(p - low, 2 * span)
    return low + span - (q - span).abs()


def _background(g: torch.Generator, frames: int, size: int) -> torch.Tensor:
    """(3, T, S, S) muted colours modulated by three drifting sinusoidal gratings.

    A drifting grating is sin(A(x, y) + B(t)) = sin A cos B + cos A sin B, so the whole pattern is
    a (T, 6) @ (6, S*S) product of per-frame coefficients and six fixed images.
    """
    c0 = _uniform(g, 0.15, 0.55, (3,))
    c1 = (c0 + _uniform(g, -0.2, 0.2, (3,))).clamp(0, 1)
    pos = torch.arange(size, dtype=torch.float32) + 0.5
    t = torch.arange(frames, dtype=torch.float32)
    basis, coef = [], []
    for cycles, weight in ((_uniform(g, 1, 3), 0.45), (_uniform(g, 2, 5), 0.35), (8.0, 0.2)):
        angle, phase = _uniform(g, 0, 2 * math.pi), _uniform(g, 0, 2 * math.pi)
        drift = _uniform(g, -0.01, 0.01) * size  # pixels per frame
        k = 2 * math.pi * float(cycles) / size
        arg = (
            k * torch.cos(angle) * pos.view(1, -1) + k * torch.sin(angle) * pos.view(-1, 1) + phase
        )
        basis += [torch.sin(arg).flatten(), torch.cos(arg).flatten()]  # (S*S,) each
        shift = -k * drift * t  # (T,)
        coef += [weight * torch.cos(shift), weight * torch.sin(shift)]
    pattern = torch.stack(coef, 1) @ torch.stack(basis)  # (T, S*S), values in [-1, 1]
    half = (0.5 * (c1 - c0)).view(3, 1, 1)
    bg = torch.addcmul((c0 + 0.5 * (c1 - c0)).view(3, 1, 1), half, pattern.unsqueeze(0))
    return bg.view(3, frames, size, size)


def _signed_distance(kind: int, u: torch.Tensor, v: torch.Tensor, r: float) -> torch.Tensor:
    """Approximate signed distance (pixels) to a shape of circumradius ~r in local coordinates."""
    if kind == 0:  # disc
        return torch.sqrt(u * u + v * v) - 0.9 * r
    if kind == 1:  # square
        return torch.maximum(u.abs(), v.abs()) - 0.7 * r
    if (
        kind == 2
    ):  # equilateral triangle pointing up (outward edge normals: down, up-left, up-right)
        a = torch.maximum(-0.866 * u - 0.5 * v, 0.866 * u - 0.5 * v)
        return torch.maximum(v, a) - 0.5 * r
    arm_u = torch.maximum(u.abs() - 0.94 * r, v.abs() - 0.32 * r)  # cross: two bars
    arm_v = torch.maximum(u.abs() - 0.32 * r, v.abs() - 0.94 * r)
    return torch.minimum(arm_u, arm_v)


def _draw(
    img: torch.Tensor,
    g: torch.Generator,
    kind: int,
    r: float,
    cx: torch.Tensor,
    cy: torch.Tensor,
) -> None:
    """Composite one textured, spinning object with centre (cx, cy) (T,) onto img (3, T, S, S).

    Only a (T, w, w) window around the object is computed, then written back with one gather and
    one scatter (the object is small compared with the frame).
    """
    frames, size = img.shape[1], img.shape[2]
    w = min(size, math.ceil(2 * r + 3))
    x0 = (cx - w / 2).floor().long().clamp(0, size - w)  # (T,)
    y0 = (cy - w / 2).floor().long().clamp(0, size - w)
    idx_x = x0[:, None] + torch.arange(w)  # (T, w)
    idx_y = y0[:, None] + torch.arange(w)
    dx = (idx_x + 0.5 - cx[:, None]).unsqueeze(1)  # (T, 1, w)
    dy = (idx_y + 0.5 - cy[:, None]).unsqueeze(2)  # (T, w, 1)

    # local coordinates of a slowly spinning object
    theta = _uniform(g, 0, 2 * math.pi) + _uniform(g, -0.06, 0.06) * torch.arange(frames)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # (T, w, w)
    alpha = (0.5 - _signed_distance(kind, u, v, r)).clamp(0, 1)  # (T, w, w), 1-pixel antialias

    # texture in the object's own frame, so it moves and spins with it
    freq = 2 * math.pi / (r * float(_uniform(g, 0.5, 1.0)))
    phase = float(_uniform(g, 0, 2 * math.pi))
    pattern = int(torch.randint(3, (1,), generator=g))
    if pattern == 0:  # stripes
        tex = torch.sin(freq * u + phase)
    elif pattern == 1:  # checker
        tex = torch.sin(freq * u + phase) * torch.sin(freq * v)
    else:  # rings
        tex = torch.sin(freq * torch.sqrt(u * u + v * v) + phase)
    color_a, color_b = _uniform(g, 0.35, 1.0, (3, 1, 1, 1)), _uniform(g, 0.0, 1.0, (3, 1, 1, 1))
    color = color_a + (color_b - color_a) * (0.5 + 0.5 * tex)  # (3, T, w, w)

    where = (
        slice(None),
        torch.arange(frames).view(-1, 1, 1),
        idx_y.unsqueeze(2),
        idx_x.unsqueeze(1),
    )
    patch = img[where]  # (3, T, w, w)
    img[where] = patch + alpha * (color - patch)


def render_video(
    g: torch.Generator,
    frames: int,
    size: int,
    state: dict | None = None,
    object_scale: tuple[float, float] = OBJECT_SCALE_SMALL,
) -> tuple[torch.Tensor, int]:
    """One clean synthetic video (3, T, S, S) float in [0, 1] and its label, all drawn from `g`.

    `state`, when given, receives the main object's ground truth: "centre" (T, 2) pixel (x, y)
    per frame and "radius" in pixels (for probes of what an encoder keeps). `object_scale`: the
    main object's radius range as fractions of `size`.
    """
    img = _background(g, frames, size)
    t = torch.arange(frames, dtype=torch.float32)

    # distractors: small, bouncing, smoothly varying velocity
    for _ in range(int(torch.randint(3, (1,), generator=g))):
        kind = int(torch.randint(len(KINDS), (1,), generator=g))
        r = size * float(_uniform(g, 0.06, 0.1))
        low, high = r + 1, size - r - 1
        centre = []
        for _axis in range(2):
            start, speed = _uniform(g, low, high), size * _uniform(g, -0.04, 0.04)
            wobble, omega, phase = (
                size * _uniform(g, 0, 0.03),
                _uniform(g, 0.1, 0.5),
                _uniform(g, 0, 6.3),
            )
            centre.append(
                _fold(start + speed * t + wobble * torch.sin(omega * t + phase), low, high)
            )
        _draw(img, g, kind, r, *centre)

    # main object: larger, straight line in one of four directions, never touching a wall
    kind = int(torch.randint(len(KINDS), (1,), generator=g))
    direction = int(torch.randint(len(DIRECTIONS), (1,), generator=g))
    r = size * float(_uniform(g, *object_scale))
    low, high = r + 1, size - r - 1
    travel = (high - low) * float(_uniform(g, 0.3, 0.7))
    tau = t / max(frames - 1, 1)
    ease = float(_uniform(g, -0.5, 0.5))  # smooth speed change, still monotone in time
    progress = travel * (tau + ease * torch.sin(2 * math.pi * tau) / (2 * math.pi))  # (T,)
    along = float(_uniform(g, low, high - travel)) + progress
    across = torch.full_like(t, float(_uniform(g, low, high)))
    ux, uy = _DIRECTION_XY[direction]
    if ux != 0:
        cx = along if ux > 0 else size - along
        cy = across
    else:
        cx = across
        cy = along if uy > 0 else size - along
    _draw(img, g, kind, r, cx, cy)
    if state is not None:
        state.update(centre=torch.stack([cx, cy], dim=1), radius=r)
    return img, kind * len(DIRECTIONS) + direction


def check_object_scale(object_scale: tuple[float, float]) -> None:
    """One-line error unless 0 < low <= high <= 0.4 (a larger object leaves no room to travel)."""
    low, high = object_scale
    require(
        0 < low <= high <= 0.4,
        f"object_scale must satisfy 0 < low <= high <= 0.4, got ({low:g}, {high:g})",
    )


def _upsample_matrix(n: int, size: int) -> torch.Tensor:
    """(size, n) matrix M with M @ values = bilinear upsampling of n values to size samples."""
    eye = torch.eye(n).unsqueeze(0)  # (1, n, n): n signals of n samples
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[0].T


def add_nuisance(video: torch.Tensor, g: torch.Generator, noise: float) -> torch.Tensor:
    """Blend video (3, T, S, S) in [0, 1], in place, with per-frame independent noise and flicker.

    Returns `(1 - a) * video + a * nuisance` with `a = NOISE_WEIGHT * noise`; `nuisance` in [0, 1]
    is i.i.d. over frames: half a per-pixel grey noise texture, half a colour flicker drawn for each
    cell of a 4x4 grid and blended bilinearly between cells.
    """
    if noise <= 0:
        return video
    _, frames, size, _ = video.shape
    texture = torch.rand(frames, size, size, generator=g)  # (T, S, S) per pixel
    cells = torch.rand(3, frames, 4, 4, generator=g)  # per channel, frame and region
    up = _upsample_matrix(4, size)  # (S, 4)
    nuisance = (up @ cells @ up.T).add_(texture)  # (3, T, S, S), in [0, 2]
    a = NOISE_WEIGHT * noise
    return video.mul_(1 - a).add_(nuisance, alpha=a / 2)


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


class SyntheticVideoDataset(Dataset):
    """`num_videos` procedurally generated clips (C, T, size, size); see the module docstring.

    Item i's content is a pure function of (seed, split, i); the nuisance noise and the
    augmentation (random resized crop, horizontal flip that also mirrors the label's direction)
    are drawn from (seed, split, epoch, i). Labels (`num_classes` = 16) are returned in every split.
    """

    num_classes = NUM_CLASSES

    def __init__(
        self,
        num_videos: int = 1024,
        frames_per_clip: int = 16,
        size: int = 224,
        seed: int = 0,
        noise: float = 0.0,
        augment: bool = False,
        split: str = "pretrain",
        crop_scale: tuple[float, float] = (0.3, 1.0),
        crop_aspect: tuple[float, float] = (0.75, 1.35),
        object_scale: tuple[float, float] = OBJECT_SCALE_SMALL,
    ):
        require(num_videos >= 1, f"num_videos must be >= 1, got {num_videos}")
        require(frames_per_clip >= 1, f"frames_per_clip must be >= 1, got {frames_per_clip}")
        require(size >= 16, f"synthetic video size must be >= 16 pixels, got {size}")
        require(0.0 <= noise <= 1.0, f"noise must be in [0, 1], got {noise}")
        require(split in SPLITS, f"split must be one of {', '.join(SPLITS)}; got '{split}'")
        check_crop_args(size, crop_scale, crop_aspect)
        check_object_scale(object_scale)
        self.num_videos = num_videos
        self.frames_per_clip = frames_per_clip
        self.size = size
        self.seed = int(seed)
        self.noise = noise
        self.augment = augment
        self.split = split
        self.crop_scale = tuple(crop_scale)
        self.crop_aspect = tuple(crop_aspect)
        self.object_scale = tuple(object_scale)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: it changes the nuisance noise and the augmentation, not the content."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_videos

    def clean_video(self, i: int) -> tuple[torch.Tensor, int]:
        """Video i without noise or augmentation: (3, T, S, S) float in [0, 1], and its label."""
        if not 0 <= i < self.num_videos:
            raise IndexError(f"index {i} out of range for {self.num_videos} synthetic videos")
        g = generator("synthetic", self.seed, self.split, int(i))
        return render_video(g, self.frames_per_clip, self.size, object_scale=self.object_scale)

    def object_centre(self, i: int) -> torch.Tensor:
        """The main object's centre in video i: (T, 2) pixel (x, y) per frame (no augmentation)."""
        state: dict = {}
        g = generator("synthetic", self.seed, self.split, int(i))
        render_video(g, self.frames_per_clip, self.size, state, self.object_scale)
        return state["centre"]

    def __getitem__(self, i: int) -> dict:
        i = int(i)  # the seed must not depend on numpy/torch integer types
        video, label = self.clean_video(i)  # (C, T, S, S)
        g = generator("synthetic-epoch", self.seed, self.split, self.epoch, i)
        video = add_nuisance(video, g, self.noise)
        if self.augment:
            box = random_resized_crop_box(
                self.size, self.size, self.crop_scale, self.crop_aspect, g
            )
            flip = bool(torch.rand(1, generator=g) < 0.5)
        else:
            box, flip = center_square_box(self.size, self.size), False
        if flip:
            kind, direction = divmod(label, len(DIRECTIONS))
            label = kind * len(DIRECTIONS) + _HFLIP_DIRECTION[direction]
        return {
            "video": crop_resize_normalize(video, box, self.size, flip),  # (C, T, S, S)
            "label": label,
            "index": i,
            "skipped": [],
        }


def write_synthetic_mp4s(
    folder: str | Path,
    n: int,
    frames: int,
    size: int,
    fps: float = 8,
    seed: int = 0,
    split: str = "pretrain",
) -> list[Path]:
    """Write n synthetic videos as `folder/synthetic_00000.mp4`, ... plus `folder/labels.csv`.

    `labels.csv` holds one 'name label' line per video (the V-JEPA CSV format), so
    `VideoClipDataset(folder)` reads them unlabelled and `VideoClipDataset(folder / "labels.csv")`
    with labels. `size` must be a multiple of 8 (mp4 macro blocks). Returns the video paths.
    """
    require(n >= 1, f"n must be >= 1, got {n}")
    require(size % 8 == 0, f"size must be a multiple of 8 to write mp4, got {size}")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder '{folder}' ({e.strerror})") from None
    data = SyntheticVideoDataset(n, frames, size, seed=seed, split=split)
    paths, lines = [], []
    for i in range(n):
        video, label = data.clean_video(i)
        frames_uint8 = (
            (video * 255 + 0.5).to(torch.uint8).permute(1, 2, 3, 0).numpy()
        )  # (T, H, W, 3)
        path = folder / f"synthetic_{i:05d}.mp4"
        write_mp4(path, frames_uint8, fps)
        paths.append(path)
        lines.append(f"{path.name} {label}\n")
    (folder / "labels.csv").write_text("".join(lines))
    return paths
