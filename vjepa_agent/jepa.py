"""The JEPA objective: one module holding student, predictor and frozen EMA teacher.

One `nn.Module` goes through `accelerator.prepare` (works under DDP, FSDP2 and DeepSpeed alike);
only the student's and predictor's parameters reach the optimizer. The teacher is updated by
`ema_update_` on the unwrapped module after each optimizer step.
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
        self.student = VideoEncoder(cfg.encoder)
        self.predictor = MaskedPredictor(cfg.encoder, cfg.predictor, num_mask_tokens=len(cfg.masks))
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.student, self.predictor]

    def forward(self, video: torch.Tensor, masks: list[Masks]) -> dict[str, torch.Tensor]:
        """video (B, C, T, H, W); one Masks per mask configuration -> {"loss", "embeddings" (teacher tokens, for the collapse monitors)}."""
        grid = self.student.grid(video.shape)
        # 1. teacher sees the whole clip; layer-norm its tokens (no affine) as targets
        with torch.no_grad():
            teacher_tokens = self.teacher(video)  # (B, N, D)
            targets = F.layer_norm(teacher_tokens.float(), teacher_tokens.shape[-1:])
        # 2. per mask config: student encodes context, predictor fills in the targets
        losses = []
        for mask_id, m in enumerate(masks):
            context = self.student(video, keep=m.context)  # (B, Nc, D)
            pred = self.predictor(context, m.context, m.target, grid, mask_id)  # (B, Nt, D)
            losses.append(jepa_loss(pred, gather_tokens(targets, m.target), self.loss_exp))
        # 3. average over mask configs
        loss = torch.stack(losses).mean()
        return {"loss": loss, "embeddings": teacher_tokens.detach()}

    @torch.no_grad()
    def update_teacher(self, momentum: float, skip: torch.Tensor | None = None) -> None:
        ema_update_(self.teacher, self.student, momentum, skip)
