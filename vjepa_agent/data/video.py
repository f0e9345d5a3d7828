"""Video folder / CSV datasets: clip sampling, decoding (decord, PyAV fallback), augmentation.

Every dataset in `vjepa_agent.data` returns the same item from `__getitem__(i)`:

    {"video": float32 (C, T, H, W), ImageNet-normalised,
     "label": int (-1 when there is none),
     "index": int (the requested index i),
     "skipped": list[str] (files that failed to decode while serving this item)}

and has `set_epoch(epoch)`. All randomness of an item (clip start, crop, flip) comes from a
generator seeded by `(seed, epoch, i)`, so the same triple gives the same tensor in any process or
DataLoader worker; this is what makes a resumed run bit-identical to an uninterrupted one.

Readers are opened per item, never in `__init__`: the dataset stays small and picklable for
DataLoader workers, and a bad file only costs one failed open.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vjepa_agent.errors import UserError, require
from vjepa_agent.seeding import generator

# decord is the extra [video]; PyAV (core, also the mp4 writer) is the fallback decoder.
try:  # decord is the fast path; on platforms without a wheel PyAV does all the decoding
    import decord
except ImportError:  # pragma: no cover - depends on the platform
    decord = None
try:
    import av
except ImportError:  # pragma: no cover - depends on the platform
    av = None

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write frames (T, H, W, 3) uint8 as an H.264 mp4 (imageio's PyAV plugin).

    yuv420p needs even sides, so an odd height or width gains one repeated edge row or column.
    """
    import imageio.v3 as iio

    frames = np.asarray(frames)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    iio.imwrite(path, np.ascontiguousarray(frames), plugin="pyav", codec="libx264", fps=fps)


def list_videos(source: str | Path) -> list[tuple[Path, int]]:
    """List `(path, label)` pairs from a video folder, a 'path label' CSV, or one video file.

    Folder: every file with a video extension, searched recursively (hidden files and folders are
    ignored), sorted by relative path. If the folder has class sub-folders, a file's label is the
    index of its top-level sub-folder among the sorted sub-folders that hold videos; files lying
    directly in the folder (or when there are no sub-folders) get -1.

    CSV / text file: one `path label` per line (V-JEPA format, space-separated; commas also
    accepted; the label may be omitted, giving -1). Relative paths are resolved against the CSV's
    folder. Blank lines and lines starting with '#' are ignored. Listed files are not opened here:
    missing or corrupt ones are skipped (and reported) when read.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"data path '{source}' does not exist; pass --data with a video folder or a 'path label' CSV"
        )
    if path.is_dir():
        return _list_folder(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return [(path, -1)]
    return _list_csv(path)


def _list_folder(root: Path) -> list[tuple[Path, int]]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [
            Path(folder, n)
            for n in names
            if not n.startswith(".") and Path(n).suffix.lower() in VIDEO_EXTENSIONS
        ]
    if not files:
        raise UserError(
            f"no video files ({' '.join(VIDEO_EXTENSIONS)}) found under '{root}'; "
            "pass --data with a video folder or a 'path label' CSV"
        )
    rel = sorted((f.relative_to(root) for f in files), key=lambda r: r.parts)
    classes = sorted({r.parts[0] for r in rel if len(r.parts) > 1})
    class_index = {c: k for k, c in enumerate(classes)}
    return [(root / r, class_index[r.parts[0]] if len(r.parts) > 1 else -1) for r in rel]


def _parse_line(line: str) -> tuple[str, int]:
    """'path label', 'path,label' or 'path' -> (path, label); a path may contain spaces."""
    parts = line.rsplit("," if "," in line else None, 1)
    if len(parts) == 2:
        try:
            return parts[0].strip(), int(parts[1])
        except ValueError:
            pass
    return line, -1


def _list_csv(csv: Path) -> list[tuple[Path, int]]:
    try:
        text = csv.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"cannot read '{csv}' as a 'path label' CSV ({e.__class__.__name__}); pass a video folder or a text CSV"
        ) from None
    items = []
    for n, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, label = _parse_line(line)
        if n == 0 and label == -1 and "label" in line.lower():
            continue  # a header line such as 'path,label'
        p = Path(name).expanduser()
        items.append((p if p.is_absolute() else csv.parent / p, label))
    if not items:
        raise UserError(f"the CSV '{csv}' lists no videos; write one 'path label' per line")
    return items


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class _DecordReader:
    """decord: random access to just the frames we need."""

    def __init__(self, path: Path):
        if decord is None:
            raise RuntimeError("decord is not installed")
        self.vr = decord.VideoReader(str(path), num_threads=1)
        self.num_frames = len(self.vr)
        self.fps = float(self.vr.get_avg_fps() or 0.0)

    def get(self, indices: np.ndarray) -> np.ndarray:
        frames = self.vr.get_batch(indices.tolist()).asnumpy()
        # decord occasionally returns padded / 4-channel frames for odd sizes: let PyAV handle those
        if frames.dtype != np.uint8 or frames.shape[::3] != (len(indices), 3):
            raise RuntimeError(f"decord returned frames of shape {frames.shape}")
        return frames


class _PyAVReader:
    """PyAV: sequential decode up to the last needed frame (only for files decord cannot read)."""

    def __init__(self, path: Path):
        if av is None:
            raise RuntimeError("PyAV is not installed")
        self.path = str(path)
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            self.num_frames = stream.frames
            if self.num_frames <= 0:  # some containers (mkv, webm) do not store a frame count
                self.num_frames = sum(1 for p in container.demux(stream) if p.size)

    def get(self, indices: np.ndarray) -> np.ndarray:
        wanted = {int(k): None for k in indices}
        last_index = int(indices.max())
        frame = None
        with av.open(self.path) as container:
            for k, frame in enumerate(container.decode(video=0)):
                if k in wanted:
                    wanted[k] = frame.to_ndarray(format="rgb24")
                if k >= last_index:
                    break
            if frame is None:
                raise RuntimeError("no frame could be decoded")
            # the stored frame count can overestimate: missing tail frames repeat the last one
            tail = frame.to_ndarray(format="rgb24")
        return np.stack([tail if wanted[int(k)] is None else wanted[int(k)] for k in indices])


def _open(path: Path, backend: str) -> _DecordReader | _PyAVReader:
    reader = _DecordReader(path) if backend == "decord" else _PyAVReader(path)
    if reader.num_frames <= 0:
        raise RuntimeError("the video has no frames")
    return reader


def probe_video(path: str | Path) -> bool:
    """True if the first and last frames of `path` decode (with decord or PyAV)."""
    for backend in ("decord", "pyav"):
        try:
            reader = _open(Path(path), backend)
            reader.get(np.array([0, reader.num_frames - 1]))
            return True
        except Exception:
            continue
    return False


# ---------------------------------------------------------------------------------------------
# Clip sampling and augmentation (shared with the synthetic dataset)
# ---------------------------------------------------------------------------------------------


def clip_indices(
    num_frames: int,
    frames_per_clip: int,
    stride: int,
    short_video: str,
    g: torch.Generator,
    random_start: bool = True,
) -> np.ndarray:
    """Frame indices (frames_per_clip,) of one clip at `stride`.

    A clip that fits starts uniformly at random (or in the middle when `random_start` is False).
    A video shorter than the clip either wraps around (`"loop"`, from a random start) or repeats
    its last frame (`"pad"`, from frame 0).
    """
    span = (frames_per_clip - 1) * stride + 1
    steps = np.arange(frames_per_clip) * stride
    if num_frames >= span:
        slack = num_frames - span
        start = int(torch.randint(slack + 1, (1,), generator=g)) if random_start else slack // 2
        return start + steps
    if short_video == "pad":
        return np.minimum(steps, num_frames - 1)
    start = int(torch.randint(num_frames, (1,), generator=g)) if random_start else 0
    return (start + steps) % num_frames


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    g: torch.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop with area fraction in `scale` and w/h ratio in `aspect`.

    Ten tries at a box that fits; otherwise the largest centred box with the aspect clamped.
    """
    area = height * width
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(10):
        u = torch.rand(4, generator=g).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        ratio = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    ratio = min(max(width / height, aspect[0]), aspect[1])
    h, w = (
        (height, round(height * ratio)) if width / height > ratio else (round(width / ratio), width)
    )
    return (height - h) // 2, (width - w) // 2, h, w


def center_square_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the centred square with the short side."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def crop_resize_normalize(
    video: torch.Tensor, box: tuple[int, int, int, int], size: int, flip: bool
) -> torch.Tensor:
    """(C, T, H, W) video -> (C, T, size, size) float32: cropped, resized, flipped, ImageNet-normalised.

    `video` is uint8 in [0, 255] or float in [0, 1] (any strides; it is never modified);
    `box` is (top, left, h, w). Bilinear resizing with antialias keeps values in range.
    """
    top, left, h, w = box
    x = video[:, :, top : top + h, left : left + w]
    peak = 255.0 if x.dtype == torch.uint8 else 1.0
    if (h, w) != (size, size):  # interpolate treats (C, T) as (batch, channels): per-frame resize
        x = F.interpolate(
            x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    if flip:
        x = x.flip(-1)
    # (x / peak - mean) / std in one pass
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    out = torch.empty(x.shape, dtype=torch.float32)  # contiguous, whatever the input strides
    return torch.addcmul(-mean / std, x.float(), 1.0 / (peak * std), out=out)


def collate_clips(items: list[dict]) -> dict:
    """Stack dataset items: video (B, C, T, H, W), label (B,), index (B,), skipped (concatenated)."""
    return {
        "video": torch.stack([it["video"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "skipped": [p for it in items for p in it["skipped"]],
    }


def check_crop_args(crop_size: int, crop_scale: tuple, crop_aspect: tuple) -> None:
    """Raise a `UserError` for crop settings that cannot work."""
    require(crop_size >= 1, f"crop_size must be >= 1, got {crop_size}")
    require(
        0 < crop_scale[0] <= crop_scale[1] <= 1,
        f"crop_scale must satisfy 0 < low <= high <= 1, got {tuple(crop_scale)}",
    )
    require(
        0 < crop_aspect[0] <= crop_aspect[1],
        f"crop_aspect must satisfy 0 < low <= high, got {tuple(crop_aspect)}",
    )


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


class VideoClipDataset(Dataset):
    """Clips of `frames_per_clip` frames from a video folder or a 'path label' CSV.

    Sampling: the frame stride is `frame_step`, or `max(1, round(video_fps / fps))` when `fps` is
    given (falling back to `frame_step` for files without a frame rate). The clip starts at a random
    frame (`random_start=False`: the middle clip). Videos shorter than a clip loop around by
    default (`short_video="loop"`); `"pad"` repeats the last frame instead.

    Augmentation (`augment=True`): random resized crop (area fraction in `crop_scale`, aspect ratio
    in `crop_aspect`) resized to `crop_size`, then a horizontal flip with probability 0.5 when
    `hflip`. Without augmentation: the centred square of the short side, resized.

    A file that cannot be decoded never crashes: item i tries files i, i+1, ... (mod n) and returns
    the first good clip, listing the failed paths in `"skipped"`.
    """

    def __init__(
        self,
        source: str | Path,
        frames_per_clip: int = 16,
        frame_step: int = 4,
        fps: float | None = None,
        crop_size: int = 224,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        crop_aspect: tuple[float, float] = (0.75, 1.35),
        hflip: bool = True,
        short_video: str = "loop",
        seed: int = 0,
        random_start: bool = True,
    ):
        require(frames_per_clip >= 1, f"frames_per_clip must be >= 1, got {frames_per_clip}")
        require(frame_step >= 1, f"frame_step must be >= 1, got {frame_step}")
        require(fps is None or fps > 0, f"fps must be positive (or None), got {fps}")
        require(
            short_video in ("loop", "pad"),
            f"short_video must be 'loop' or 'pad', got '{short_video}'",
        )
        check_crop_args(crop_size, crop_scale, crop_aspect)
        require(
            decord is not None or av is not None,
            "reading video files needs decord or PyAV, and neither is installed: "
            "pip install 'vjepa_agent[video]'",
        )
        self.source = str(source)
        self.samples = list_videos(source)
        self.frames_per_clip = frames_per_clip
        self.frame_step = frame_step
        self.fps = fps
        self.crop_size = crop_size
        self.augment = augment
        self.crop_scale = tuple(crop_scale)
        self.crop_aspect = tuple(crop_aspect)
        self.hflip = hflip
        self.short_video = short_video
        self.seed = int(seed)
        self.random_start = random_start
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that, with the seed and the index, fixes every random choice."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def stride_for(self, video_fps: float) -> int:
        """Frame stride for a video with frame rate `video_fps`."""
        if self.fps is None or not video_fps or not math.isfinite(video_fps):
            return self.frame_step
        return max(1, round(video_fps / self.fps))

    def _decode_clip(self, path: Path, g: torch.Generator) -> torch.Tensor:
        """(T, H, W, 3) uint8 clip from `path`, decord first, PyAV if decord fails."""
        state = g.get_state()
        error: Exception | None = None
        for backend in ("decord", "pyav"):
            g.set_state(state)  # both backends draw the same random numbers
            try:
                reader = _open(path, backend)
                stride = self.stride_for(reader.fps)
                idx = clip_indices(
                    reader.num_frames,
                    self.frames_per_clip,
                    stride,
                    self.short_video,
                    g,
                    self.random_start,
                )
                unique, inverse = np.unique(idx, return_inverse=True)
                frames = reader.get(unique)[inverse]  # decode each needed frame once
                return torch.from_numpy(np.ascontiguousarray(frames))
            except Exception as e:
                error = e
        raise RuntimeError(f"cannot decode '{path}': {error}")

    def __getitem__(self, i: int) -> dict:
        i, n = int(i), len(self.samples)  # int(): the seed must not depend on numpy/torch int types
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} videos")
        skipped: list[str] = []
        for k in range(n):
            path, label = self.samples[(i + k) % n]
            g = generator("video-clip", self.seed, self.epoch, i)
            try:
                frames = self._decode_clip(path, g)  # (T, H, W, 3) uint8
            except Exception:
                skipped.append(str(path))
                continue
            _, height, width, _ = frames.shape
            if self.augment:
                box = random_resized_crop_box(height, width, self.crop_scale, self.crop_aspect, g)
                flip = self.hflip and bool(torch.rand(1, generator=g) < 0.5)
            else:
                box, flip = center_square_box(height, width), False
            video = crop_resize_normalize(frames.permute(3, 0, 1, 2), box, self.crop_size, flip)
            return {"video": video, "label": label, "index": i, "skipped": skipped}
        raise UserError(f"no decodable video in '{self.source}' ({n} files tried)")
