"""Deterministic, resumable data order for training on one or many processes.

Every clip is a pure function of (seed, epoch, index): the sampler fixes which indices each rank
sees in which order, and the dataset draws its augmentation from (seed, epoch, index). Resuming at
step s therefore only needs the number of samples already consumed — no sampler state on disk.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vjepa_agent import seeding


class EpochIndexed(Dataset):
    """Wrap a dataset with `set_epoch` so items are requested as (epoch, index) pairs (works in workers)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class ResumableSampler(Sampler):
    """Endless (epoch, index) stream for one rank, starting after `start` samples already consumed.

    Epoch e is a permutation seeded by (seed, e); rank r takes every world-th entry from position r
    (the tail that does not divide evenly is dropped so ranks stay in step).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if size < world:
            raise ValueError(f"dataset of {size} items cannot be split over {world} processes")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start
        self.per_rank = size // world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            perm = torch.randperm(self.size, generator=seeding.generator("order", self.seed, epoch))
            mine = perm[self.rank : self.per_rank * self.world : self.world]
            for i in mine[offset:].tolist():
                yield epoch, i
            epoch, offset = epoch + 1, 0


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    rank: int,
    world: int,
    start: int,
    num_workers: int,
    collate_fn,
) -> DataLoader:
    """A DataLoader over `ResumableSampler`; not prepared by Accelerate (the sampler already shards)."""
    return DataLoader(
        EpochIndexed(dataset),
        batch_size=batch_size,
        sampler=ResumableSampler(len(dataset), seed, rank, world, start),
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        drop_last=True,
    )
