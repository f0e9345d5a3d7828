"""Synthetic videos: shapes, determinism, label content, nuisance independence, mp4 export."""

from __future__ import annotations

import pickle

import pytest
import torch

from vjepa_agent.data.synthetic import (
    DIRECTIONS,
    KINDS,
    NOISE_WEIGHT,
    SyntheticVideoDataset,
    _signed_distance,
    label_name,
    write_synthetic_mp4s,
)
from vjepa_agent.data.video import IMAGENET_MEAN, IMAGENET_STD, VideoClipDataset, collate_clips
from vjepa_agent.errors import UserError


def unnormalize(video: torch.Tensor) -> torch.Tensor:
    """(C, T, H, W) normalised -> values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return video * std + mean


def motion_feature(video: torch.Tensor) -> torch.Tensor:
    """Displacement (2,) of the centroid of |frame difference| from the first to the last pair."""
    grey = video.mean(0)  # (T, H, W)
    diff = (grey[1:] - grey[:-1]).abs()  # (T-1, H, W)
    weights = diff / diff.sum((1, 2), keepdim=True).clamp_min(1e-8)
    pos = torch.arange(grey.shape[-1], dtype=torch.float32)
    cx = (weights.sum(1) * pos).sum(-1)  # (T-1,)
    cy = (weights.sum(2) * pos).sum(-1)
    d = torch.stack([cx[-1] - cx[0], cy[-1] - cy[0]])
    return d / d.norm().clamp_min(1e-8)


def test_item_interface_and_shapes():
    ds = SyntheticVideoDataset(num_videos=6, frames_per_clip=4, size=32, seed=1)
    assert len(ds) == 6 and ds.num_classes == len(KINDS) * len(DIRECTIONS) == 16
    item = ds[2]
    assert set(item) == {"video", "label", "index", "skipped"}
    assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.float32
    assert item["video"].is_contiguous() and torch.isfinite(item["video"]).all()
    assert 0 <= item["label"] < 16 and item["index"] == 2 and item["skipped"] == []
    clean = unnormalize(item["video"])
    assert clean.min() > -1e-4 and clean.max() < 1 + 1e-4
    batch = collate_clips([ds[0], ds[1]])
    assert batch["video"].shape == (2, 3, 4, 32, 32) and batch["label"].dtype == torch.long
    # speed sanity: a default-sized clip is generated without trouble
    big = SyntheticVideoDataset(2, frames_per_clip=16, size=224, noise=0.5, augment=True)[1]
    assert big["video"].shape == (3, 16, 224, 224)


def test_determinism_splits_and_epochs():
    make = dict(num_videos=4, frames_per_clip=4, size=32, seed=7)
    a, b = SyntheticVideoDataset(**make), pickle.loads(pickle.dumps(SyntheticVideoDataset(**make)))
    assert torch.equal(a[3]["video"], b[3]["video"]) and a[3]["label"] == b[3]["label"]
    assert not torch.equal(a[2]["video"], a[3]["video"])
    assert torch.equal(a[torch.tensor(3)]["video"], a[3]["video"])  # any integer type
    with pytest.raises(IndexError):
        a[4]
    test = SyntheticVideoDataset(**make, split="probe_test")
    assert not torch.equal(a[3]["video"], test[3]["video"])
    a.set_epoch(2)  # content ignores the epoch
    assert torch.equal(a[3]["video"], b[3]["video"])

    noisy = SyntheticVideoDataset(**make, noise=0.5, augment=True)
    first = noisy[1]["video"]
    assert torch.equal(first, SyntheticVideoDataset(**make, noise=0.5, augment=True)[1]["video"])
    noisy.set_epoch(1)  # fresh nuisance and augmentation every epoch
    assert not torch.equal(first, noisy[1]["video"])


def test_bad_arguments_raise_user_error():
    with pytest.raises(UserError, match="noise"):
        SyntheticVideoDataset(noise=1.5)
    with pytest.raises(UserError, match="split"):
        SyntheticVideoDataset(split="train")


def test_shape_kinds_are_distinct():
    pos = torch.linspace(-12, 12, 49)
    u, v = pos.view(1, -1), pos.view(-1, 1)
    masks = [_signed_distance(k, u, v, 10.0) < 0 for k in range(len(KINDS))]
    for i in range(len(masks)):
        assert masks[i].sum() > 0.2 * masks[i].numel()
        for j in range(i):
            iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
            assert iou < 0.9, (KINDS[i], KINDS[j])


def test_labels_cover_classes_and_direction_is_recoverable():
    train = SyntheticVideoDataset(160, frames_per_clip=8, size=32, split="probe_train")
    test = SyntheticVideoDataset(96, frames_per_clip=8, size=32, split="probe_test")

    def features(ds):
        pairs = [ds.clean_video(i) for i in range(len(ds))]
        return torch.stack([motion_feature(v) for v, _ in pairs]), torch.tensor(
            [y for _, y in pairs]
        )

    x_train, y_train = features(train)
    x_test, y_test = features(test)
    assert len(set(y_train.tolist())) >= 8 and max(y_train.tolist()) < 16
    assert label_name(6) == "square-down"

    # nearest centroid on the motion feature recovers the direction part of the label
    dirs = y_train % len(DIRECTIONS)
    centroids = torch.stack([x_train[dirs == d].mean(0) for d in range(len(DIRECTIONS))])
    pred_dir = torch.cdist(x_test, centroids).argmin(1)
    direction_acc = (pred_dir == y_test % len(DIRECTIONS)).float().mean().item()
    assert direction_acc > 0.8, direction_acc

    # full 16-class label: direction from motion, kind by majority over the training set
    kind = torch.bincount(y_train // len(DIRECTIONS)).argmax()
    label_acc = (kind * len(DIRECTIONS) + pred_dir == y_test).float().mean().item()
    assert label_acc > 2.5 / 16, label_acc


def test_flip_mirrors_the_direction_in_the_label():
    clean = SyntheticVideoDataset(32, frames_per_clip=4, size=32)
    aug = SyntheticVideoDataset(32, frames_per_clip=4, size=32, augment=True)
    changed = 0
    for i in range(32):
        before, after = clean[i]["label"], aug[i]["label"]
        if before != after:
            changed += 1
            assert before // 4 == after // 4  # same kind
            assert {before % 4, after % 4} == {0, 1}  # right <-> left
    assert changed > 0


def test_nuisance_is_independent_across_frames():
    make = dict(num_videos=4, frames_per_clip=8, size=64, seed=3)
    clean = SyntheticVideoDataset(**make)
    noisy = SyntheticVideoDataset(**make, noise=1.0)
    a = NOISE_WEIGHT * 1.0
    noise_corr, content_corr = [], []
    for i in range(4):
        content = unnormalize(clean[i]["video"])  # (C, T, H, W)
        nuisance = unnormalize(noisy[i]["video"]) - (1 - a) * content  # a * nuisance
        for series, out in ((nuisance, noise_corr), (content, content_corr)):
            frames = series.transpose(0, 1).flatten(1)  # (T, C*H*W)
            for t in range(frames.shape[0] - 1):
                out.append(torch.corrcoef(frames[t : t + 2])[0, 1].item())
    mean_noise_corr = sum(noise_corr) / len(noise_corr)
    assert abs(mean_noise_corr) < 0.05, mean_noise_corr
    assert sum(content_corr) / len(content_corr) > 0.5  # while the content is predictable
    # the nuisance is really there and stays in range
    assert (nuisance.std() > 0.05) and nuisance.min() >= -1e-4 and nuisance.max() <= a + 1e-4


def test_write_synthetic_mp4s_round_trip(tmp_path):
    paths = write_synthetic_mp4s(tmp_path / "out", n=3, frames=6, size=32, fps=8, seed=2)
    assert [p.name for p in paths] == [f"synthetic_{i:05d}.mp4" for i in range(3)]
    expected = [SyntheticVideoDataset(3, 6, 32, seed=2).clean_video(i)[1] for i in range(3)]
    ds = VideoClipDataset(
        tmp_path / "out" / "labels.csv", frames_per_clip=4, frame_step=1, crop_size=32
    )
    items = [ds[i] for i in range(3)]
    assert [it["label"] for it in items] == expected
    assert all(it["skipped"] == [] and it["video"].shape == (3, 4, 32, 32) for it in items)
    with pytest.raises(UserError, match="multiple of 8"):
        write_synthetic_mp4s(tmp_path, n=1, frames=2, size=36)
