"""Collapse monitors: a collapsed encoder maps every clip to (nearly) the same embedding.

The monitors never raise: a diverging run must reach the training loop's own one-line error, not
die inside a monitor. Non-finite input (or an SVD that does not converge) gives NaN and a warning.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("vjepa_agent.metrics")


def _finite_rows(tokens: torch.Tensor, name: str) -> torch.Tensor | None:
    """tokens (..., D) -> (M, D) float, or None (with a warning) when any value is non-finite."""
    x = tokens.detach().float().reshape(-1, tokens.shape[-1])
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        log.warning(
            "%s: %d of %d embedding values are non-finite; reporting NaN", name, bad, x.numel()
        )
        return None
    return x


@torch.no_grad()
def embedding_std(tokens: torch.Tensor) -> float:
    """Mean over dims of the per-dimension std of embeddings: tokens (..., D) -> float. 0 = constant.

    NaN (and a warning) on non-finite input.
    """
    x = _finite_rows(tokens, "embedding_std")
    if x is None:
        return float("nan")
    return float(x.std(dim=0).mean())


@torch.no_grad()
def effective_rank(tokens: torch.Tensor, max_rows: int = 1024) -> float:
    """exp(entropy) of the normalised singular values of centred embeddings (..., D) -> float in [1, D].

    1 means all embeddings lie on a line (collapse); D means every direction is used equally.
    Uses at most `max_rows` evenly spaced rows. NaN (and a warning) on non-finite input or when
    the SVD does not converge.
    """
    x = _finite_rows(tokens, "effective_rank")
    if x is None:
        return float("nan")
    if x.shape[0] > max_rows:
        x = x[torch.linspace(0, x.shape[0] - 1, max_rows).long()]
    x = x - x.mean(dim=0, keepdim=True)
    try:
        s = torch.linalg.svdvals(x)
    except torch.linalg.LinAlgError as e:  # finite but ill-conditioned (e.g. values near overflow)
        log.warning("effective_rank: SVD failed (%s); reporting NaN", str(e).splitlines()[0][:120])
        return float("nan")
    if not torch.isfinite(s).all():  # finite input whose squares overflow
        log.warning("effective_rank: singular values are non-finite; reporting NaN")
        return float("nan")
    if float(s.sum()) <= 1e-12:
        return 1.0
    p = s / s.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(torch.exp(entropy))
