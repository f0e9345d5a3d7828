"""Video folder / CSV datasets: listing, decoding, clip sampling, corrupt files, determinism."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from vjepa_agent.data.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoClipDataset,
    _PyAVReader,
    collate_clips,
    list_videos,
    probe_video,
)
from vjepa_agent.errors import UserError


def write_mp4(path, frames_thwc: np.ndarray, fps: float = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    from vjepa_agent.data.video import write_mp4 as write

    write(path, frames_thwc, fps)


def ramp_video(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Flat grey frames whose brightness encodes the frame number: 10 + 20 * k."""
    values = 10 + 20 * np.arange(num_frames, dtype=np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()


def textured_video(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    base = base.repeat(8, 0).repeat(8, 1)  # blocky texture survives compression
    return np.stack([np.roll(base, 2 * k, axis=1) for k in range(num_frames)])


def frame_numbers(video: torch.Tensor) -> list[int]:
    """Undo the normalisation of a ramp clip (C, T, H, W) and read back each frame's number."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    grey = ((video * std + mean) * 255).mean((0, 2, 3))  # (T,)
    return [round((float(v) - 10) / 20) for v in grey]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_mp4(root / "cats" / "a.mp4", textured_video(20, seed=1))
    write_mp4(root / "dogs" / "nested" / "b.mp4", textured_video(12, seed=2))
    return root


# ---- listing ----


def test_list_folder_with_class_subfolders(tmp_path):
    for rel in ["b/x.mp4", "a/deep/y.MKV", "a/z.mov", "b/notes.txt", ".hidden/w.mp4", "a/._v.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    items = list_videos(tmp_path)
    assert [(p.relative_to(tmp_path).as_posix(), y) for p, y in items] == [
        ("a/deep/y.MKV", 0),
        ("a/z.mov", 0),
        ("b/x.mp4", 1),
    ]


def test_list_flat_folder_is_unlabelled(tmp_path):
    for name in ["2.webm", "1.mp4"]:
        (tmp_path / name).touch()
    assert [(p.name, y) for p, y in list_videos(tmp_path)] == [("1.mp4", -1), ("2.webm", -1)]


def test_list_csv(tmp_path):
    (tmp_path / "sub").mkdir()
    absolute = tmp_path / "abs.mp4"
    csv = tmp_path / "sub" / "list.csv"
    csv.write_text(f"a.mp4 3\n\n# comment\nmy video.mp4 1\nc.avi,7\n{absolute} 0\nnolabel.mp4\n")
    assert list_videos(csv) == [
        (tmp_path / "sub" / "a.mp4", 3),
        (tmp_path / "sub" / "my video.mp4", 1),
        (tmp_path / "sub" / "c.avi", 7),
        (absolute, 0),
        (tmp_path / "sub" / "nolabel.mp4", -1),
    ]


def test_list_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist; pass --data"):
        list_videos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        list_videos(tmp_path / "empty")
    (tmp_path / "empty.csv").write_text("\n# nothing\n")
    with pytest.raises(UserError, match="empty.csv"):
        list_videos(tmp_path / "empty.csv")


# ---- decoding and sampling ----


def test_items_shape_determinism_and_epochs(folder):
    ds = VideoClipDataset(folder, frames_per_clip=4, frame_step=2, crop_size=32, seed=3)
    assert len(ds) == 2
    item = ds[1]
    assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.float32
    assert item["video"].is_contiguous() and torch.isfinite(item["video"]).all()
    assert (item["label"], item["index"], item["skipped"]) == (1, 1, [])

    # the same (seed, epoch, i) in another "process" gives the identical tensor
    other = pickle.loads(pickle.dumps(VideoClipDataset(folder, 4, 2, crop_size=32, seed=3)))
    assert torch.equal(other[1]["video"], item["video"])
    assert torch.equal(other[np.int64(1)]["video"], item["video"])  # samplers may yield numpy ints
    with pytest.raises(IndexError):
        ds[2]
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["video"], item["video"])

    batch = collate_clips([ds[0], ds[1]])
    assert batch["video"].shape == (2, 3, 4, 32, 32)
    assert batch["label"].tolist() == [0, 1] and batch["index"].tolist() == [0, 1]
    assert batch["label"].dtype == torch.long and batch["skipped"] == []


def test_no_augment_is_center_crop_and_epoch_independent_crop(folder):
    ds = VideoClipDataset(folder, 4, 2, crop_size=24, augment=False, random_start=False)
    first = ds[0]["video"]
    ds.set_epoch(5)
    assert torch.equal(ds[0]["video"], first)
    assert first.shape == (3, 4, 24, 24)


def test_corrupt_and_empty_files_are_skipped(tmp_path):
    write_mp4(tmp_path / "good.mp4", ramp_video(8))
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "x.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    ds = VideoClipDataset(tmp_path, frames_per_clip=2, frame_step=1, crop_size=16)
    names = [p.name for p, _ in ds.samples]
    assert names == ["empty.mp4", "good.mp4", "x.mp4"]
    assert ds[0]["skipped"] == [str(tmp_path / "empty.mp4")]
    assert ds[1]["skipped"] == []
    item = ds[2]  # x.mp4, then empty.mp4 (wraps around), then good.mp4
    assert item["skipped"] == [str(tmp_path / "x.mp4"), str(tmp_path / "empty.mp4")]
    assert item["index"] == 2 and item["video"].shape == (3, 2, 16, 16)
    assert collate_clips([ds[0], item])["skipped"] == ds[0]["skipped"] + item["skipped"]
    assert [probe_video(tmp_path / n) for n in names] == [False, True, False]


def test_all_corrupt_raises_user_error(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"not a video at all")
    (tmp_path / "b.mp4").touch()
    ds = VideoClipDataset(tmp_path, frames_per_clip=2, crop_size=16)
    with pytest.raises(UserError, match=r"no decodable video in .* \(2 files tried\)"):
        ds[0]


def test_short_video_loop_and_pad(tmp_path):
    write_mp4(tmp_path / "short.mp4", ramp_video(5))
    pad = VideoClipDataset(
        tmp_path, frames_per_clip=4, frame_step=2, crop_size=16, short_video="pad"
    )
    assert frame_numbers(pad[0]["video"]) == [0, 2, 4, 4]
    loop = VideoClipDataset(tmp_path, frames_per_clip=4, frame_step=2, crop_size=16)
    starts = set()
    for epoch in range(6):
        loop.set_epoch(epoch)
        got = frame_numbers(loop[0]["video"])
        assert got == [(got[0] + 2 * k) % 5 for k in range(4)]
        starts.add(got[0])
    assert len(starts) > 1  # the loop starts at a random frame
    with pytest.raises(UserError, match="short_video"):
        VideoClipDataset(tmp_path, short_video="wrap")


def test_stride_from_fps_and_frame_step(tmp_path):
    write_mp4(tmp_path / "ramp.mp4", ramp_video(12), fps=8)
    for kwargs, stride in [({"fps": 4}, 2), ({"fps": 2}, 4), ({"fps": 100}, 1), ({}, 3)]:
        ds = VideoClipDataset(tmp_path, frames_per_clip=3, frame_step=3, crop_size=16, **kwargs)
        for epoch in range(3):
            ds.set_epoch(epoch)
            got = frame_numbers(ds[0]["video"])
            assert np.diff(got).tolist() == [stride, stride], (kwargs, got)


def test_pyav_fallback_matches_and_odd_sizes_decode(tmp_path):
    write_mp4(tmp_path / "ramp.mp4", ramp_video(6))
    reader = _PyAVReader(tmp_path / "ramp.mp4")
    assert (reader.num_frames, reader.fps) == (6, 8.0)
    frames = reader.get(np.array([1, 5, 1]))
    assert frames.shape == (3, 32, 32, 3)
    assert [round((f.mean() - 10) / 20) for f in frames] == [1, 5, 1]
    # a frame size that some decord builds return padded: decoded anyway (PyAV if needed)
    write_mp4(tmp_path / "odd" / "odd.mp4", ramp_video(6, height=32, width=48))
    ds = VideoClipDataset(tmp_path / "odd", frames_per_clip=3, frame_step=1, crop_size=16)
    item = ds[0]
    assert item["skipped"] == [] and item["video"].shape == (3, 3, 16, 16)


def test_write_mp4_pads_odd_sides_and_reads_back(tmp_path):
    """H.264 (yuv420p) needs even sides: a 33 x 35 clip is written as 34 x 36, every frame kept."""
    import imageio.v3 as iio

    from vjepa_agent.data.video import write_mp4

    frames = np.full((5, 33, 35, 3), 120, np.uint8)
    write_mp4(tmp_path / "odd.mp4", frames, fps=8)
    back = np.stack(list(iio.imiter(tmp_path / "odd.mp4", plugin="pyav")))
    assert back.shape == (5, 34, 36, 3)
    assert np.abs(back.astype(int) - 120).max() <= 3
