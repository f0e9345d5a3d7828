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

from collections.abc import Callable

import torch
import torch.nn.functional as F
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

    @torch.no_grad()
    def markov_step(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`forward` of one fused step (fuse_action, a single time step) as a function
        (latents (B, Dz), actions (B, A)) -> next latents (B, Dz), for rollouts without gradients.

        A step is one token, so each block's attention is its value and output projections
        (softmax over one key is 1), and every LayerNorm's scale and shift fold into the linear
        layer after it: a block becomes LayerNorm, one matmul, LayerNorm, the MLP. About a
        third of the ops of `forward`, the same function up to float rounding. The weights are
        folded when this is called (once per rollout), so training never sees stale ones.
        """
        if not self.fuse_action:
            raise ValueError("markov_step needs fuse_action (one token per step)")
        d = self.latent_in.out_features
        # input: latent_in(z) + action_in(a) + the step-0 time, token and type embeddings
        w_in = torch.cat([self.latent_in.weight, self.action_in.weight], dim=1)
        b_in = (
            self.latent_in.bias
            + self.action_in.bias
            + self.time_embed[0]
            + self.token_embed[0]
            + self.type_embed[2]
        )
        blocks = []
        for block in self.transformer.blocks:
            attn, mlp, n1, n2 = block.attn, block.mlp, block.norm1, block.norm2
            w_v = attn.qkv.weight[2 * d :]
            b_v = attn.qkv.bias[2 * d :] if attn.qkv.bias is not None else w_v.new_zeros(d)
            w_attn = attn.proj.weight @ w_v  # proj(v(.)) as one matrix
            w_a = w_attn * n1.weight  # LN1's scale
            b_a = w_attn @ n1.bias + attn.proj.weight @ b_v + attn.proj.bias
            w_1 = mlp.fc1.weight * n2.weight
            b_1 = mlp.fc1.weight @ n2.bias + mlp.fc1.bias
            blocks.append((n1.eps, w_a, b_a, n2.eps, w_1, b_1, mlp.fc2.weight, mlp.fc2.bias))
        norm = self.transformer.norm
        w_out = self.latent_out.weight * norm.weight
        b_out = self.latent_out.weight @ norm.bias + self.latent_out.bias

        def step(latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            x = F.linear(torch.cat([latents, actions.to(latents.dtype)], dim=-1), w_in, b_in)
            for eps1, w_a, b_a, eps2, w_1, b_1, w_2, b_2 in blocks:
                x = x + F.linear(F.layer_norm(x, (d,), eps=eps1), w_a, b_a)
                h = F.gelu(F.linear(F.layer_norm(x, (d,), eps=eps2), w_1, b_1))
                x = x + F.linear(h, w_2, b_2)
            return latents + F.linear(F.layer_norm(x, (d,), eps=norm.eps), w_out, b_out)

        return step
