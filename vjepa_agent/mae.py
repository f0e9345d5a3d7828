"""Masked pixel reconstruction (VideoMAE-style): the baseline JEPA is compared against.

Same encoder, same masks, same optimiser and budget as JEPA; only the objective differs. The
encoder sees the context tokens; a light decoder (the predictor architecture with a pixel head)
reconstructs the pixels of every masked tubelet, each tubelet normalised by its own mean and std
(VideoMAE's normalised-pixel target). Loss: mean squared error at the target tubelets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vjepa_agent.config import PretrainConfig
from vjepa_agent.masking import Masks
from vjepa_agent.models.encoder import VideoEncoder, gather_tokens
from vjepa_agent.models.predictor import MaskedPredictor


def tubelet_pixels(video: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """video (B, C, T, H, W) -> per-token pixels (B, N, tubelet*patch*patch*C), tokens in (t h w) order."""
    return rearrange(
        video,
        "b c (t p) (h q) (w r) -> b (t h w) (p q r c)",
        p=tubelet,
        q=patch,
        r=patch,
    )


class MAE(nn.Module):
    """Encoder (trained) + pixel decoder. `update_teacher` is a no-op: there is no teacher."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        enc = cfg.encoder.resolved()
        self.patch, self.tubelet = enc.patch_size, enc.tubelet_size
        self.student = VideoEncoder(enc)
        if cfg.freeze_patch_embed:
            self.student.patch_embed.requires_grad_(False)
        pixels = enc.in_channels * enc.tubelet_size * enc.patch_size**2
        self.predictor = MaskedPredictor(enc, cfg.predictor, len(cfg.masks), out_dim=pixels)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.student, self.predictor]

    def forward(self, video: torch.Tensor, masks: list[Masks]) -> dict[str, torch.Tensor]:
        """video (B, C, T, H, W) -> {"loss", "embeddings" (encoder context tokens, for monitors)}."""
        grid = self.student.grid(video.shape)
        # 1. per-tubelet normalised pixel targets
        with torch.no_grad():
            target = tubelet_pixels(video.float(), self.patch, self.tubelet)  # (B, N, P)
            target = F.layer_norm(target, target.shape[-1:], eps=1e-6)
        # 2. per mask config: encode context, decode pixels at the targets
        losses, embeddings = [], None
        for mask_id, m in enumerate(masks):
            context = self.student(video, keep=m.context)  # (B, Nc, D)
            pred = self.predictor(context, m.context, m.target, grid, mask_id)  # (B, Nt, P)
            losses.append(F.mse_loss(pred.float(), gather_tokens(target, m.target)))
            embeddings = context.detach() if embeddings is None else embeddings
        return {"loss": torch.stack(losses).mean(), "embeddings": embeddings}

    def update_teacher(self, momentum: float, skip: torch.Tensor | None = None) -> None:
        """No teacher in MAE."""
