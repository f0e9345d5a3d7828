"""The action-conditioned, frame-causal latent predictor (V-JEPA 2-AC style).

Per time step t the sequence holds `[action token a_t, (state token), N frame tokens of z_t]`;
attention is block-causal over time: a token at step t sees every token at steps <= t. The
outputs at the frame tokens of step t predict the frame tokens of step t + 1 (as a residual on
z_t). N > 1 is the full token mode. With N = 1 (one pooled/projected latent per frame: the
"compact" mode) the action can instead be fused into the frame token (`fuse_action`: its
embedding is added to it), so a step is one token: half the work per step, and a one-step
(Markov) prediction needs no attention at all, which is what makes planning fast.

Shapes: latents (B, T, N, Dz), actions (B, T, A) (already one-hot or scaled to [-1, 1]),
optional states (B, T, P); output (B, T, N, Dz).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vjepa_agent.models.layers import Transformer, init_weights


def block_causal_mask(steps: int, tokens_per_step: int, device=None) -> torch.Tensor:
    """Boolean (L, L) attention mask, True = may attend: token i sees token j iff step(j) <= step(i)."""
    step = torch.arange(steps, device=device).repeat_interleave(tokens_per_step)
    return step[None, :] <= step[:, None]


class ACPredictor(nn.Module):
    """Frame-causal transformer predicting next-step latents from latents and actions."""

    def __init__(
        self,
        latent_dim: int,
        action_dim: int,
        tokens_per_frame: int = 1,
        dim: int = 128,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        max_steps: int = 64,
        state_dim: int = 0,
        fuse_action: bool = False,
    ):
        super().__init__()
        if fuse_action and (tokens_per_frame != 1 or state_dim > 0):
            raise ValueError("fuse_action needs one token per frame and no state tokens")
        self.tokens_per_frame = tokens_per_frame
        self.fuse_action = fuse_action
        self.max_steps = max_steps
        self.state_dim = state_dim
        self.latent_in = nn.Linear(latent_dim, dim)
        self.action_in = nn.Linear(action_dim, dim)
        self.state_in = nn.Linear(state_dim, dim) if state_dim > 0 else None
        # learned positions: time (shared by a step's tokens), frame-token index, token type
        self.time_embed = nn.Parameter(torch.zeros(max_steps, dim))
        self.token_embed = nn.Parameter(torch.zeros(tokens_per_frame, dim))
        self.type_embed = nn.Parameter(torch.zeros(3, dim))  # action, state, frame
        self.transformer = Transformer(dim, depth, heads, mlp_ratio)
        self.latent_out = nn.Linear(dim, latent_dim)
        init_weights(self)
        for p in (self.time_embed, self.token_embed, self.type_embed):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.zeros_(self.latent_out.weight)  # start as "repeat the last latent"
        nn.init.zeros_(self.latent_out.bias)

    def forward(
        self, latents: torch.Tensor, actions: torch.Tensor, states: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, t, n, _ = latents.shape
        if t > self.max_steps:
            raise ValueError(f"sequence of {t} steps is longer than max_steps={self.max_steps}")
        time = self.time_embed[:t]  # (T, Dp)
        frame = self.latent_in(latents) + self.token_embed + self.type_embed[2]  # (B, T, N, Dp)
        if self.fuse_action:  # one token per step: frame + action embedding
            x = frame + (self.action_in(actions) + time)[:, :, None]  # (B, T, 1, Dp)
            mask = block_causal_mask(t, 1, x.device) if t > 1 else None
            x = self.transformer(x[:, :, 0], attn_mask=mask)  # (B, T, Dp)
            return latents + self.latent_out(x)[:, :, None]
        # 1. tokens of each step: action, optional state, frame tokens
        parts = [(self.action_in(actions) + self.type_embed[0] + time)[:, :, None]]  # (B, T, 1, Dp)
        if self.state_in is not None:
            parts.append((self.state_in(states) + self.type_embed[1] + time)[:, :, None])
        parts.append(frame + time[:, None])
        x = torch.cat(parts, dim=2)  # (B, T, K, Dp), K tokens per step
        k = x.shape[2]
        # 2. block-causal attention over the flattened sequence
        mask = (
            block_causal_mask(t, k, x.device) if t > 1 else None
        )  # one step: all tokens see each other
        x = self.transformer(rearrange(x, "b t k d -> b (t k) d"), attn_mask=mask)
        # 3. frame-token outputs predict the next step's latents (residual on z_t)
        x = rearrange(x, "b (t k) d -> b t k d", t=t)[:, :, k - n :]  # (B, T, N, Dp)
        return latents + self.latent_out(x)
