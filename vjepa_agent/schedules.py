"""Learning rate, weight decay and EMA momentum as pure functions of the global step.

Never a prepared scheduler: Accelerate steps those once per process. Resume restores the step,
and with it every schedule.
"""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    total: int,
    warmup: int,
    start_lr: float,
    lr: float,
    final_lr: float,
    kind: str = "cosine",
) -> float:
    """Linear warmup start_lr -> lr over `warmup` steps, then cosine / linear decay to final_lr, or constant."""
    if step < warmup:
        return start_lr + (lr - start_lr) * step / warmup
    if kind == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return lr + (final_lr - lr) * progress
    if kind == "cosine":
        return final_lr + 0.5 * (lr - final_lr) * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule '{kind}'; use cosine, constant or linear")


def cosine_at(step: int, *, total: int, start: float, end: float) -> float:
    """Cosine interpolation start -> end over `total` steps (weight decay)."""
    progress = min(1.0, step / max(1, total))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def linear_at(step: int, *, total: int, start: float, end: float) -> float:
    """Linear interpolation start -> end over `total` steps (EMA momentum; start == end is constant)."""
    progress = min(1.0, step / max(1, total))
    return start + (end - start) * progress
