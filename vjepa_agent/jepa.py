"""The JEPA objective: one module holding student, predictor and frozen EMA teacher.

One `nn.Module` goes through `accelerator.prepare` (works under DDP, FSDP2 and DeepSpeed alike);
only the student's and predictor's parameters reach the optimizer. The teacher is updated by
`ema_update_` on the unwrapped module after each optimizer step.

Optional anti-collapse regularizers act on the student's context embeddings, which the teacher
follows through the EMA (the teacher itself gets no gradient):

- `vicreg_loss`: VICReg's variance hinge (every dimension's std across the batch's tokens at
  least 1) plus its covariance term (squared off-diagonal covariances over D), so no few
  directions can carry all the variance;
- `sigreg_loss`: SIGReg (LeJEPA): an Epps-Pulley test, on random 1-D projections, that the
  standardised-free embeddings are distributed as N(0, 1); zero only for Gaussian embeddings.

Two options against the "slow features" failure (the most predictable thing in a clip, such as
its background colour, taking over the embedding; docs/video_jepa.md):

- `center_targets`: the teacher's tokens minus their clip mean are the targets, so what is the
  same for every token of a clip earns the predictor nothing;
- `reg_within_clip`: the regularizer sees context tokens minus their clip mean, so an embedding
  that is constant within each clip (however much it varies between clips) pays its full penalty.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vjepa_agent.config import PretrainConfig
from vjepa_agent.masking import Masks
from vjepa_agent.models.encoder import VideoEncoder, gather_tokens
from vjepa_agent.models.predictor import MaskedPredictor


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """mean |pred - target|^p / p over every element."""
    return (pred.float() - target.float()).abs().pow(p).mean() / p


def vicreg_loss(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance + covariance of embeddings z (M, D): mean relu(1 - std_d) + sum_{i!=j} C_ij^2 / D."""
    z = z.float()
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + eps)  # (D,)
    variance = F.relu(1.0 - std).mean()
    cov = (z.T @ z) / max(1, z.shape[0] - 1)  # (D, D)
    off = cov - torch.diag(cov.diagonal())
    return variance + off.pow(2).sum() / z.shape[1]


def sigreg_loss(
    z: torch.Tensor, num_projections: int = 256, generator: torch.Generator | None = None
) -> torch.Tensor:
    """SIGReg: Epps-Pulley statistic of embeddings z (M, D) against N(0, 1), averaged over random directions.

    Each direction u (unit, D) gives samples s = z u (M,); the statistic is the Gaussian-weighted
    squared distance between their empirical characteristic function and exp(-t^2 / 2), over
    t in [-4, 4] (trapezoid rule), times M. A fresh set of directions per call unless `generator`.
    """
    z = z.float()
    u = torch.randn(z.shape[1], num_projections, generator=generator).to(z.device)
    u = u / u.norm(dim=0, keepdim=True)  # (D, K)
    s = z @ u  # (M, K)
    t = torch.linspace(-4.0, 4.0, 17, device=z.device)  # (J,)
    ts = s[..., None] * t  # (M, K, J)
    real, imag = ts.cos().mean(dim=0), ts.sin().mean(dim=0)  # (K, J)
    target = torch.exp(-0.5 * t**2)  # characteristic function of N(0, 1)
    err = (real - target).pow(2) + imag.pow(2)  # (K, J)
    weighted = err * target  # weight exp(-t^2 / 2)
    return torch.trapezoid(weighted, t, dim=-1).mean() * z.shape[0]


@torch.no_grad()
def ema_update_(
    teacher: nn.Module, student: nn.Module, momentum: float, skip: torch.Tensor | None = None
) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, for every parameter (in place).

    Call on unwrapped modules (not DDP/FSDP wrappers). momentum 1 freezes the teacher;
    momentum 0 copies the student. `skip`: a 0-d device tensor, 1 = leave the teacher unchanged
    (a skipped training step), applied on the device without a host sync.
    """
    t_params = list(teacher.parameters())
    s_params = [s.detach() for s in student.parameters()]
    assert len(t_params) == len(s_params), "teacher and student must have the same parameters"
    if skip is None:
        torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
    else:  # a tensor weight: the Scalar overload would read it on the host
        weight = torch.full((), 1.0 - momentum, device=skip.device) * (1 - skip)
        torch._foreach_lerp_(t_params, s_params, [weight] * len(t_params))


class JEPA(nn.Module):
    """Student encoder + predictor (trained) and teacher encoder (EMA copy, frozen)."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.loss_exp = cfg.loss_exp
        self.regularizer = None
        if cfg.regularizer == "vicreg":
            self.regularizer = vicreg_loss
        elif cfg.regularizer == "sigreg":
            self.regularizer = sigreg_loss
        self.reg_weight = cfg.reg_weight
        self.center_targets = cfg.center_targets
        self.reg_within_clip = cfg.reg_within_clip
        self.student = VideoEncoder(cfg.encoder)
        self.predictor = MaskedPredictor(cfg.encoder, cfg.predictor, num_mask_tokens=len(cfg.masks))
        if cfg.freeze_patch_embed:  # before the copy: the teacher's stays equal to it
            self.student.patch_embed.requires_grad_(False)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.student, self.predictor]

    def forward(self, video: torch.Tensor, masks: list[Masks]) -> dict[str, torch.Tensor]:
        """video (B, C, T, H, W); one Masks per mask configuration -> {"loss", "embeddings" (teacher tokens, for the collapse monitors)}."""
        grid = self.student.grid(video.shape)
        # 1. teacher sees the whole clip; (centre per clip and) layer-norm its tokens as targets
        with torch.no_grad():
            teacher_tokens = self.teacher(video)  # (B, N, D)
            targets = teacher_tokens.float()
            if self.center_targets:
                targets = targets - targets.mean(dim=1, keepdim=True)
            targets = F.layer_norm(targets, targets.shape[-1:])
        # 2. per mask config: student encodes context, predictor fills in the targets
        losses, regs = [], []
        for mask_id, m in enumerate(masks):
            context = self.student(video, keep=m.context)  # (B, Nc, D)
            pred = self.predictor(context, m.context, m.target, grid, mask_id)  # (B, Nt, D)
            losses.append(jepa_loss(pred, gather_tokens(targets, m.target), self.loss_exp))
            if self.regularizer is not None:  # across every context token of the batch
                if self.reg_within_clip:
                    context = context - context.mean(dim=1, keepdim=True)
                regs.append(self.regularizer(context.flatten(0, 1)))  # (B * Nc, D)
        # 3. average over mask configs; plus the weighted regularizer
        loss = torch.stack(losses).mean()
        out = {"loss": loss, "embeddings": teacher_tokens.detach()}
        if regs:
            reg = torch.stack(regs).mean()
            out.update(loss=loss + self.reg_weight * reg, prediction_loss=loss, reg_loss=reg)
        return out

    @torch.no_grad()
    def update_teacher(self, momentum: float, skip: torch.Tensor | None = None) -> None:
        ema_update_(self.teacher, self.student, momentum, skip)
