"""The masked-token predictor: a narrow ViT that fills in target tokens from context tokens."""

from __future__ import annotations

import torch
from torch import nn

from vjepa_agent.config import EncoderConfig, PredictorConfig
from vjepa_agent.models.encoder import gather_tokens
from vjepa_agent.models.layers import Rope3d, Transformer, grid_positions, init_weights, sincos_3d


class MaskedPredictor(nn.Module):
    """Context tokens (B, Nc, D) + target positions (B, Nt) -> predicted target tokens (B, Nt, D).

    Context is projected to the predictor width; each target position gets a learnable mask token
    (one per mask configuration, zero-initialised) plus its position; only target outputs return,
    projected to the encoder width (or to `out_dim`, e.g. pixels per tubelet for MAE).
    """

    def __init__(
        self,
        enc: EncoderConfig,
        cfg: PredictorConfig,
        num_mask_tokens: int = 2,
        out_dim: int | None = None,
    ):
        super().__init__()
        enc = enc.resolved()
        self.pos_embed = enc.pos_embed
        self.dim = cfg.dim
        self.embed = nn.Linear(enc.dim, cfg.dim)
        self.mask_tokens = nn.Parameter(torch.zeros(num_mask_tokens, cfg.dim))
        self.rope = Rope3d(cfg.dim // cfg.heads) if enc.pos_embed == "rope" else None
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self.out = nn.Linear(cfg.dim, out_dim or enc.dim)
        init_weights(self)
        nn.init.zeros_(self.mask_tokens)

    def forward(
        self,
        context: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        grid: tuple[int, int, int],
        mask_id: int = 0,
    ) -> torch.Tensor:
        b, n_ctx, _ = context.shape
        n_tgt = target_idx.shape[1]
        # 1. context to predictor width; mask tokens at every target position
        ctx = self.embed(context)  # (B, Nc, Dp)
        tgt = self.mask_tokens[mask_id].to(ctx.dtype).expand(b, n_tgt, -1)  # (B, Nt, Dp)
        x = torch.cat([ctx, tgt], dim=1)  # (B, Nc + Nt, Dp)
        # 2. positions of both (grid indices of context, then targets)
        idx = torch.cat([context_idx, target_idx], dim=1)  # (B, Nc + Nt)
        pos = gather_tokens(grid_positions(grid, x.device).expand(b, -1, -1), idx)  # (B, Nc+Nt, 3)
        rope = None
        if self.rope is None:
            x = x + sincos_3d(pos, self.dim).to(x.dtype)
        else:
            rope = self.rope(pos)
        # 3. transformer; return the target outputs in encoder width
        x = self.transformer(x, rope)
        return self.out(x[:, n_ctx:])  # (B, Nt, D)
