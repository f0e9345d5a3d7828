"""Collapse monitors: a collapsed encoder maps every clip to (nearly) the same embedding."""

from __future__ import annotations

import torch


@torch.no_grad()
def embedding_std(tokens: torch.Tensor) -> float:
    """Mean over dims of the per-dimension std of embeddings: tokens (..., D) -> float. 0 = constant."""
    x = tokens.detach().float().reshape(-1, tokens.shape[-1])
    return float(x.std(dim=0).mean())


@torch.no_grad()
def effective_rank(tokens: torch.Tensor, max_rows: int = 1024) -> float:
    """exp(entropy) of the normalised singular values of centred embeddings (..., D) -> float in [1, D].

    1 means all embeddings lie on a line (collapse); D means every direction is used equally.
    Uses at most `max_rows` evenly spaced rows.
    """
    x = tokens.detach().float().reshape(-1, tokens.shape[-1])
    if x.shape[0] > max_rows:
        x = x[torch.linspace(0, x.shape[0] - 1, max_rows).long()]
    x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if float(s.sum()) <= 1e-12:
        return 1.0
    p = s / s.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(torch.exp(entropy))
