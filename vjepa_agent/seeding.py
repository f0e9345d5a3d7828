"""Deterministic seeds derived from several integers (stable across processes, unlike `hash`)."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure function of `parts` (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(*parts: int | str) -> torch.Generator:
    """A CPU torch.Generator seeded with `derive_seed(*parts)`."""
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g
