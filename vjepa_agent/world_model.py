"""`WorldModel`: encoder, action-conditioned predictor and reward / termination heads in one object.

    wm = WorldModel.from_pretrained("runs/cartpole-wm")
    z = wm.encode(obs)                       # (..., C, T, H, W) uint8 pixels or (..., O) states -> (..., Z)
    z_next = wm.predict(z, action)           # one step, batched
    traj = wm.rollout(z, action_seqs)        # z (..., Z), actions (..., H[, A]) -> (..., H, Z)
    r, p_done = wm.reward(traj), wm.termination(traj)

Latents, by `WorldModelConfig.pixel_encoder`:
- vit: the frozen video ViT, then (compact mode) a PCA of all its tokens fitted on the data,
  Z = latent_dim; in token mode every layer-normed token, (..., N, D).
- jepa, reconstruction: a learned ViT whose tokens are mean- and max-pooled, one linear map,
  a LayerNorm (`LearnedPixelEncoder`, Z = latent_dim), trained with the predictor
  (train/world_model.py); reconstruction also holds the pixel decoder it trains with.
- moments: the fixed object-moment encoder (`models/moments.py`), Z = C * T * 6 standardised
  moments (the last frame's and the frame-to-frame changes).
- State observations: the normalised state (already the ideal low-dimensional code).

Actions are given as the env takes them: Discrete indices (...,) or (..., 1) long; Box values
(..., A) float. They are one-hot encoded or scaled to [-1, 1] inside.

Compact pixel latents end with the features of the action that led to the observation (zeros
after a reset; `previous_action`): a stack of frames shows the velocity before the last push, not
after it, so without that action the latent would not be Markov. `encode(obs, prev_action)`
fills it in, `predict` / `rollout` set it to the action they apply, and `observation_part(z)`
drops it (errors and goal distances are measured on that part only).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vjepa_agent import checkpoint as ckpt
from vjepa_agent.config import EncoderConfig, WorldModelConfig, to_dict
from vjepa_agent.data.video import IMAGENET_MEAN, IMAGENET_STD
from vjepa_agent.errors import UserError, require
from vjepa_agent.models.ac_predictor import ACPredictor
from vjepa_agent.models.encoder import VideoEncoder
from vjepa_agent.models.layers import grid_positions
from vjepa_agent.models.moments import ObjectMoments

FORMAT = "vjepa_agent.world_model/1"


# ---------------------------------------------------------------------------- encoders


class PixelLatentEncoder(nn.Module):
    """uint8 frames (B, C, T, H, W) -> latent (B, Z) (compact) or (B, N, D) (tokens)."""

    def __init__(
        self,
        enc: EncoderConfig,
        frame_shape: tuple[int, ...],
        latent: str,
        latent_dim: int,
    ):
        super().__init__()
        self.vit = VideoEncoder(enc)
        c, t, h, w = frame_shape
        self.num_tokens = (t // enc.tubelet_size) * (h // enc.patch_size) * (w // enc.patch_size)
        self.latent = latent
        flat = self.num_tokens * enc.dim
        if latent == "compact":  # PCA of the flattened tokens, fitted on data
            self.register_buffer("pca_mean", torch.zeros(flat))
            self.register_buffer("pca_components", torch.zeros(flat, latent_dim))
            # of each component, before whitening
            self.register_buffer("pca_variance", torch.ones(latent_dim))
        mean, std = pixel_statistics(c)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def _tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, C, T, H, W) -> ViT tokens (B, N, D)."""
        return self.vit((frames.float() / 255.0 - self.mean) / self.std)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.latent == "tokens":
            tokens = self._tokens(frames)
            return F.layer_norm(tokens, tokens.shape[-1:])  # (B, N, D)
        return self.features(frames)  # (B, Z)

    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, C, T, H, W) -> the compact latent, PCA features (B, Z)."""
        flat = rearrange(self._tokens(frames), "b n d -> b (n d)")
        return (flat - self.pca_mean) @ self.pca_components

    @torch.no_grad()
    def fit_pca(self, frames: torch.Tensor) -> float:
        """Fit the compact projection to frames (B, C, T, H, W): the top principal directions of the
        flattened tokens, all scaled by one factor so the latent's mean variance per dimension is 1
        (relative scales kept: the big visual changes stay big, in the loss and in goal distances).
        Returns the fraction of variance explained."""
        flat = rearrange(self._tokens(frames), "b n d -> b (n d)")
        mean = flat.mean(0)
        u, s, v = torch.linalg.svd(flat - mean, full_matrices=False)
        k = self.pca_components.shape[1]
        variance = s[:k] ** 2 / (flat.shape[0] - 1)
        scale = variance.mean().sqrt().clamp_min(1e-6)
        self.pca_mean.copy_(mean)
        # fewer frames than components: the missing components stay zero features
        self.pca_components.zero_()
        self.pca_components[:, : len(variance)] = v[:k].T / scale
        self.pca_variance.zero_()
        self.pca_variance[: len(variance)] = variance / scale**2
        return float((s[:k] ** 2).sum() / (s**2).sum())


def simnorm(z: torch.Tensor, group: int = 8) -> torch.Tensor:
    """Softmax over consecutive groups of `group` dims (TD-MPC2's SimNorm): (..., Z) -> (..., Z)."""
    return F.softmax(z.unflatten(-1, (-1, group)), dim=-1).flatten(-2)


class LearnedPixelEncoder(nn.Module):
    """uint8 frames (B, C, T, H, W) -> learned latent (B, Z): the video ViT, the mean and the max
    of its tokens, one linear map, a normalisation.

    Mean and max pooling read an object's shape wherever it is (CartPole: the pole's angle beside
    a cart anywhere on the track), and the sin-cos positions the ViT adds to every token keep where
    it is; flattened tokens would need position-specific weights for both, and read the pole
    worse (measured on CartPole in docs/world_model_encoders.md). With `keypoints`, learned
    keypoints of every tubelet slice and their changes join the pooled tokens (`keypoint_coords`;
    WorldModelConfig.keypoints)."""

    def __init__(
        self,
        enc: EncoderConfig,
        frame_shape: tuple[int, ...],
        latent_dim: int,
        norm: str,
        keypoints: int = 0,
    ):
        super().__init__()
        c, t, h, w = frame_shape
        enc = dataclasses.replace(enc.resolved(), in_channels=c)
        self.vit = VideoEncoder(enc)
        self.norm = norm
        self.grid = (t // enc.tubelet_size, h // enc.patch_size, w // enc.patch_size)
        self.num_tokens = math.prod(self.grid)
        self.keypoints = keypoints
        kp_features = 0
        if keypoints:
            self.kp_logits = nn.Linear(enc.dim, keypoints)
            self.kp_offset = nn.Linear(enc.dim, 2 * keypoints)
            # every token's (x, y) centre in patch units from the grid's centre: (1, 1, S, 1, 2)
            _, h_, w_ = self.grid
            rows, cols = grid_positions((1, h_, w_))[:, 1:].float().unbind(-1)
            centre = torch.stack([cols - (w_ - 1) / 2, rows - (h_ - 1) / 2], -1)
            self.kp_centre = centre.view(1, 1, -1, 1, 2)  # a constant of the grid, not a weight
            # (x, y) of every slice and the change between consecutive slices
            kp_features = 2 * keypoints * (2 * self.grid[0] - 1)
        self.proj = nn.Linear(2 * enc.dim + kp_features, latent_dim)
        self.out_dim = latent_dim
        mean, std = pixel_statistics(c)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> the ViT's float input (per-channel standardised)."""
        return (frames.float() / 255.0 - self.mean) / self.std

    def keypoint_coords(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) -> keypoints (B, T', K, 2): per tubelet slice, the softmax-weighted
        mean over its tokens of each token's centre plus its offset, (x, y) in patch units."""
        b, (t, h, w), k = tokens.shape[0], self.grid, self.keypoints
        weights = self.kp_logits(tokens).view(b, t, h * w, k).softmax(dim=2)  # (B, T', S, K)
        offset = 0.5 * torch.tanh(self.kp_offset(tokens)).view(b, t, h * w, k, 2)
        return (weights[..., None] * (self.kp_centre.to(tokens.device, tokens.dtype) + offset)).sum(
            dim=2
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        tokens = self.vit(self.normalise(frames))  # (B, N, D)
        parts = [tokens.mean(1), tokens.amax(1)]
        if self.keypoints:
            kp = self.keypoint_coords(tokens)  # (B, T', K, 2)
            parts += [kp.flatten(1), (kp[:, 1:] - kp[:, :-1]).flatten(1)]
        z = self.proj(torch.cat(parts, dim=-1))  # (B, 2D [+ keypoints]) -> (B, Z)
        if self.norm == "layernorm":
            return F.layer_norm(z, z.shape[-1:])
        return simnorm(z) if self.norm == "simnorm" else z


class PixelDecoder(nn.Module):
    """Latent (B, Z) -> normalised frames (B, C, T, H, W): a linear map to one small vector per
    tubelet, then each to its tubelet's pixels (the reconstruction baseline's decoder)."""

    def __init__(
        self, latent_dim: int, frame_shape: tuple[int, ...], enc: EncoderConfig, width: int = 32
    ):
        super().__init__()
        c, t, h, w = frame_shape
        self.grid = (t // enc.tubelet_size, h // enc.patch_size, w // enc.patch_size)
        self.patch = (enc.tubelet_size, enc.patch_size, enc.patch_size)
        n = self.grid[0] * self.grid[1] * self.grid[2]
        self.to_tokens = nn.Linear(latent_dim, n * width)
        self.to_pixels = nn.Sequential(
            nn.GELU(), nn.Linear(width, c * enc.tubelet_size * enc.patch_size**2)
        )
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.to_pixels(self.to_tokens(z).unflatten(-1, (-1, self.width)))  # (B, N, C*pt*ph*pw)
        (t, h, w), (pt, ph, pw) = self.grid, self.patch
        return rearrange(
            x,
            "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)",
            t=t,
            h=h,
            w=w,
            pt=pt,
            ph=ph,
            pw=pw,
        )


def pixel_statistics(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C, 1, 1, 1) that standardise frames in [0, 1]: ImageNet's for RGB."""
    mean = torch.tensor(IMAGENET_MEAN[:channels] if channels == 3 else [0.5] * channels)
    std = torch.tensor(IMAGENET_STD[:channels] if channels == 3 else [0.25] * channels)
    return mean.view(channels, 1, 1, 1), std.view(channels, 1, 1, 1)


class StateLatentEncoder(nn.Module):
    """State vectors (B, O) -> (state - mean) / std, with statistics fitted on the training data."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    def fit(self, states: torch.Tensor) -> None:
        states = states.float().reshape(-1, states.shape[-1])
        self.mean.copy_(states.mean(0))
        self.std.copy_(states.std(0).clamp_min(1e-3))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.float() - self.mean) / self.std


def _head(dim: int, hidden: int = 128) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, 1),
    )


# ---------------------------------------------------------------------------- the model


class WorldModel(nn.Module):
    """Encoder + action-conditioned predictor + reward and termination heads (see module docstring)."""

    def __init__(self, cfg: WorldModelConfig, env: dict[str, Any]):
        super().__init__()
        self.cfg, self.env = cfg, env
        space = env["action_space"]
        self.action_kind = {"Discrete": "discrete", "Box": "continuous"}.get(space["type"])
        require(
            self.action_kind is not None,
            f"action space {space['type']} cannot be embedded; use a Discrete or Box action space",
        )
        if self.action_kind == "discrete":
            self.action_dim = int(space["n"])
        else:
            require(
                len(space["shape"]) == 1, f"Box actions must be 1-D, got shape {space['shape']}"
            )
            self.action_dim = int(space["shape"][0])
            self.register_buffer("action_low", torch.tensor(space["low"], dtype=torch.float32))
            self.register_buffer("action_high", torch.tensor(space["high"], dtype=torch.float32))
        # 1. encoder: pixels through the ViT, states normalised
        self.decoder = None  # the reconstruction baseline's pixel decoder
        if env["obs"] == "pixels" and cfg.pixel_encoder == "moments":
            self.encoder = ObjectMoments(tuple(env["pixel_shape"]))
            tokens, latent_dim = 1, self.encoder.out_dim
        elif env["obs"] == "pixels" and cfg.pixel_encoder in ("jepa", "reconstruction"):
            shape = tuple(env["pixel_shape"])
            self.encoder = LearnedPixelEncoder(
                cfg.encoder, shape, cfg.latent_dim, cfg.latent_norm, cfg.keypoints
            )
            tokens, latent_dim = 1, cfg.latent_dim
            if cfg.pixel_encoder == "reconstruction":
                self.decoder = PixelDecoder(cfg.latent_dim, shape, cfg.encoder.resolved())
        elif env["obs"] == "pixels":
            self.encoder = PixelLatentEncoder(
                cfg.encoder,
                tuple(env["pixel_shape"]),
                cfg.latent,
                cfg.latent_dim,
            )
            tokens = 1 if cfg.latent == "compact" else self.encoder.num_tokens
            latent_dim = cfg.latent_dim if cfg.latent == "compact" else cfg.encoder.resolved().dim
        else:
            self.encoder = StateLatentEncoder(int(env["observation_shape"][0]))
            tokens, latent_dim = 1, int(env["observation_shape"][0])
        # the trailing previous-action features of compact pixel latents (see module docstring)
        self.prev_action_dims = (
            self.action_dim if env["obs"] == "pixels" and tokens == 1 and cfg.previous_action else 0
        )
        latent_dim += self.prev_action_dims
        self.tokens_per_frame, self.latent_dim = tokens, latent_dim
        # 2. predictor and heads
        self.predictor = ACPredictor(
            latent_dim,
            self.action_dim,
            tokens_per_frame=tokens,
            dim=cfg.predictor_dim,
            depth=cfg.predictor_depth,
            heads=cfg.predictor_heads,
            max_steps=64,
            fuse_action=cfg.fuse_action and tokens == 1,
        )
        flat = tokens * latent_dim
        self.reward_head = _head(flat)
        self.termination_head = _head(flat)
        # discounted failure, failure_discount ** (steps until termination); see WorldModelConfig
        self.failure_head = _head(flat) if cfg.failure_weight > 0 else None
        # (z_t, z_t+1) observation parts -> a_t (the previous-action features would give it away)
        self.inverse_head = nn.Sequential(
            nn.Linear(2 * (flat - self.prev_action_dims), 128),
            nn.GELU(),
            nn.Linear(128, self.action_dim),
        )  # (z_t, z_t+1) -> a_t, a training signal only

    # ---- shapes ----
    @property
    def learned_encoder(self) -> bool:
        """The pixel encoder learns with the predictor (pixel_encoder jepa or reconstruction)."""
        return isinstance(self.encoder, LearnedPixelEncoder)

    @property
    def compact(self) -> bool:
        return self.tokens_per_frame == 1

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one latent: (Z,) compact (the previous-action features included), (N, D)
        with tokens."""
        return (self.latent_dim,) if self.compact else (self.tokens_per_frame, self.latent_dim)

    def _latent_ndim(self) -> int:
        return 1 if self.compact else 2

    def action_features(self, actions: torch.Tensor) -> torch.Tensor:
        """Env actions -> predictor inputs (..., A): Discrete indices (...) one-hot, Box (..., A) scaled to [-1, 1]."""
        if self.action_kind == "discrete":
            a = actions.long() - int(self.env["action_space"].get("start", 0))
            return F.one_hot(a, self.action_dim).float()
        a = actions.float()
        return 2 * (a - self.action_low) / (self.action_high - self.action_low) - 1

    def prev_action_features(
        self,
        prev_action: torch.Tensor | None,
        lead: tuple[int, ...],
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Features (*lead, A) of the actions taken before observations: zeros where there was none
        (prev_action None, or valid (*lead) False)."""
        if prev_action is None:
            return torch.zeros(*lead, self.action_dim, device=next(self.parameters()).device)
        feats = self.action_features(prev_action).expand(*lead, self.action_dim)
        return feats if valid is None else feats * valid[..., None].to(feats.dtype)

    def with_prev_action(self, z: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Replace the previous-action part of latents z (..., Z) by feats (..., A)."""
        if not self.prev_action_dims:
            return z
        return torch.cat([z[..., : -self.prev_action_dims], feats.to(z.dtype)], dim=-1)

    def observation_part(self, z: torch.Tensor) -> torch.Tensor:
        """Latents without their previous-action features (what the observation alone gives)."""
        return z[..., : -self.prev_action_dims] if self.prev_action_dims else z

    # ---- the API ----
    def encode(
        self,
        obs: torch.Tensor | np.ndarray,
        prev_action: torch.Tensor | np.ndarray | None = None,
        valid: torch.Tensor | np.ndarray | None = None,
        encoder: nn.Module | None = None,
    ) -> torch.Tensor:
        """Observations (..., C, T, H, W) uint8 or (..., O), tensors or numpy arrays -> latents
        (..., Z) or (..., N, D).

        Compact pixel latents also take the action taken before each observation, `prev_action`
        as `predict` takes actions (None or `valid` False: a first observation after a reset).
        `encoder` replaces this model's (training passes the EMA target encoder).
        """
        obs, valid = self._as_tensor(obs), self._as_tensor(valid)
        prev_action = self._as_action(prev_action)
        return self._encode_with(encoder or self.encoder, obs, prev_action, valid)

    def _as_tensor(self, x: Any) -> Any:
        """numpy arrays (or lists) -> tensors on this model's device; tensors and None as given."""
        if x is None or isinstance(x, torch.Tensor):
            return x
        return torch.as_tensor(np.asarray(x), device=next(self.parameters()).device)

    def _as_action(self, action: Any) -> Any:
        """Actions as the env takes them (tensor, numpy, Python int or float, list) -> a tensor;
        Discrete indices given outside torch are checked against the action space."""
        if action is None or isinstance(action, torch.Tensor):
            return action
        a = self._as_tensor(action)
        if self.action_kind == "discrete":
            start = int(self.env["action_space"].get("start", 0))
            require(
                not a.is_floating_point()
                and bool(((a >= start) & (a < start + self.action_dim)).all()),
                f"Discrete actions are integers in [{start}, {start + self.action_dim}), got {action!r}",
            )
        return a

    def _encode_with(self, fn, obs, prev_action, valid) -> torch.Tensor:
        """fn over the observations' flattened leading dims, then the previous-action features."""
        obs_ndim = 4 if self.env["obs"] == "pixels" else 1
        lead = obs.shape[: obs.ndim - obs_ndim]
        z = fn(obs.reshape(-1, *obs.shape[obs.ndim - obs_ndim :]))
        z = z.reshape(*lead, *z.shape[1:])
        if self.prev_action_dims:
            z = torch.cat([z, self.prev_action_features(prev_action, lead, valid)], dim=-1)
        return z

    def _step_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, *latent) -> (B, T, N, D) predictor layout."""
        return z[:, :, None] if self.compact else z

    def predict_sequence(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: latents (B, T, *latent), env actions (B, T[, A]) -> next latents (B, T, *latent).

        With context 1 every step is predicted from its own latent and action only (Markov);
        otherwise step t sees steps <= t (block-causal).
        """
        feats = self.action_features(actions)  # (B, T, A)
        if self.cfg.context == 1:
            b, t = latents.shape[:2]
            flat = latents.reshape(b * t, 1, *latents.shape[2:])
            out = self.predictor(self._step_tokens(flat), feats.reshape(b * t, 1, -1))
            out = out.reshape(b, t, *out.shape[2:])
        else:
            out = self.predictor(self._step_tokens(latents), feats)
        return self.with_prev_action(out[:, :, 0], feats) if self.compact else out

    def predict(
        self, z: torch.Tensor, action: torch.Tensor | np.ndarray | int | float | list
    ) -> torch.Tensor:
        """One step: z (..., *latent), action (...) long or (..., A) float -> z_next (..., *latent).

        `action` may also be a Python int (Discrete), a float or list (Box), or a numpy array."""
        action = self._as_action(action)
        horizon_axis = action.ndim - 1 if self.action_kind == "continuous" else action.ndim
        traj = self.rollout(z, action.unsqueeze(horizon_axis))  # (..., 1, *latent)
        return traj.select(traj.ndim - 1 - self._latent_ndim(), 0)

    def rollout(self, z: torch.Tensor, actions: torch.Tensor, plain: bool = False) -> torch.Tensor:
        """Imagine H steps: start latents z (..., *latent), actions (..., H) long or (..., H, A) -> (..., H, *latent).

        Leading dims of z broadcast against those of actions (e.g. z (E, 1, Z) with actions
        (E, S, H) plans S sequences per env). Autoregressive, batched over every leading dim; the
        predictor sees the last `context` steps (at most seq_len, the longest it was trained on).
        A Markov predictor (context 1) steps with its folded `markov_step` when no gradient is
        needed, and steps each distinct Discrete action prefix once (`rollout_nodes`); `plain`
        runs the predictor's module forward on every sequence instead (the same numbers to float
        rounding; the planning benchmark's reference).
        """
        if not plain and self._shares_prefixes(z, actions):
            nodes, index = self.rollout_nodes(z, actions)
            return nodes[index]
        lead, horizon, z, a = self._rollout_inputs(z, actions)
        markov = self.cfg.context == 1 and not plain
        traj = self._rollout_loop(z, self.action_features(a), markov)
        return traj.reshape(*lead, horizon, *traj.shape[2:])

    def rollout_nodes(
        self, z: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`rollout` as (nodes (N, *latent), index (..., H)) with rollout(z, actions) ==
        nodes[index]: the distinct imagined latents and where each sequence's steps are among
        them. With a Markov predictor and Discrete actions from shared starts (a planner's
        samples) the latent after step k depends only on the start and the actions up to k, so
        each distinct prefix is stepped once: with 128 samples of 10 steps a CartPole planner
        imagines about 115 distinct latents, not 1280. Per-latent costs (the heads) can then be
        computed on the nodes and gathered. Otherwise every step of every sequence is a node."""
        if self._shares_prefixes(z, actions):
            lead, horizon, z_rows, a = self._rollout_inputs(z, actions, expand=False)
            z_lead = z.shape[: z.ndim - self._latent_ndim()]
            starts = torch.arange(math.prod(z_lead), device=z.device).reshape(z_lead)
            nodes, index = self._shared_prefixes(z_rows, starts.expand(lead).reshape(-1), a)
            return nodes, index.reshape(*lead, horizon)
        traj = self.rollout(z, actions)  # (..., H, *latent)
        lead_h = traj.shape[: traj.ndim - self._latent_ndim()]
        index = torch.arange(math.prod(lead_h), device=z.device).reshape(lead_h)
        return traj.reshape(-1, *traj.shape[len(lead_h) :]), index

    def _shares_prefixes(self, z: torch.Tensor, actions: torch.Tensor) -> bool:
        """Whether `rollout_nodes` steps shared prefixes once: a Markov predictor, Discrete
        actions, and fewer start latents than sequences (z broadcast over samples)."""
        if self.cfg.context != 1 or self.action_kind != "discrete":
            return False
        z_lead = z.shape[: z.ndim - self._latent_ndim()]
        return z_lead != torch.broadcast_shapes(actions.shape[:-1], z_lead)

    def _rollout_inputs(self, z: torch.Tensor, actions: torch.Tensor, expand: bool = True):
        """Broadcast leading dims: (lead, H, start latents (B, *latent) (with expand=False: z's
        own rows, (U, *latent)), actions (B, H[, A]))."""
        lat_nd = self._latent_ndim()
        act_nd = 1 if self.action_kind == "continuous" else 0  # discrete actions: (..., H) indices
        a_lead = actions.shape[: actions.ndim - 1 - act_nd]
        horizon = actions.shape[actions.ndim - 1 - act_nd]
        z_lead = z.shape[: z.ndim - lat_nd]
        lead = torch.broadcast_shapes(a_lead, z_lead)
        latent_shape = z.shape[z.ndim - lat_nd :]
        a = actions.expand(*lead, *actions.shape[len(a_lead) :]).reshape(
            -1, *actions.shape[len(a_lead) :]
        )
        z = z.expand(*lead, *latent_shape) if expand else z
        return lead, horizon, z.reshape(-1, *latent_shape), a

    def _rollout_loop(self, z: torch.Tensor, feats: torch.Tensor, markov: bool) -> torch.Tensor:
        """Start latents z (B, *latent), action features (B, H, A) -> (B, H, *latent): the
        Markov step (`_markov_step`) H times, or the predictor over the last seq_len steps."""
        history = [z]
        if markov:
            step = self._markov_step()
            for k in range(feats.shape[1]):
                history.append(step(history[-1], feats[:, k]))
        else:
            window = 1 if self.cfg.context == 1 else self.cfg.seq_len
            for k in range(feats.shape[1]):
                start = max(0, k + 1 - window)
                lat = torch.stack(history[start:], dim=1)  # (B, t, *latent)
                nxt = self.predictor(self._step_tokens(lat), feats[:, start : k + 1])[:, -1]
                history.append(
                    self.with_prev_action(nxt[:, 0], feats[:, k]) if self.compact else nxt
                )
        return torch.stack(history[1:], dim=1)

    def _markov_step(self):
        """One step of a Markov (context 1) predictor as a function (latents (B, *latent),
        action features (B, A)) -> next latents: the predictor's folded `markov_step` when no
        gradient is needed (planning, evaluation), else its forward."""
        if self.compact and self.predictor.fuse_action and not torch.is_grad_enabled():
            fused = self.predictor.markov_step()
            return lambda z, feats: self.with_prev_action(fused(z, feats), feats)

        def step(z: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
            nxt = self.predictor(self._step_tokens(z[:, None]), feats[:, None])[:, -1]
            return self.with_prev_action(nxt[:, 0], feats) if self.compact else nxt

        return step

    def _shared_prefixes(
        self, z: torch.Tensor, starts: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`rollout_nodes` of B sequences with Discrete actions a (B, H) from the start latents
        z[starts] (z (U, *latent), starts (B,)): each distinct (start, action prefix) is
        stepped once. Returns the nodes (N, *latent) and the index (B, H) of each step's."""
        n_actions = self.action_dim
        offset = int(self.env["action_space"].get("start", 0))
        step, latents, node = self._markov_step(), z, starts
        nodes, index, first = [], [], 0
        for k in range(a.shape[1]):
            # the distinct (node, action) pairs of step k are the nodes of step k + 1
            keys, node = torch.unique(
                node * n_actions + a[:, k].long() - offset, return_inverse=True
            )
            feats = self.action_features(keys % n_actions + offset)  # (U, A)
            latents = step(latents[keys // n_actions], feats)
            nodes.append(latents)
            index.append(node + first)
            first += len(keys)
        return torch.cat(nodes), torch.stack(index, dim=1)

    def _flat(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.compact else z.flatten(-2)

    def reward(self, z: torch.Tensor) -> torch.Tensor:
        """Predicted reward for arriving in latent z: (..., *latent) -> (...)."""
        return self.reward_head(self._flat(z))[..., 0]

    def termination(self, z: torch.Tensor) -> torch.Tensor:
        """Predicted probability that latent z is terminal: (..., *latent) -> (...) in [0, 1]."""
        return torch.sigmoid(self.termination_logits(z))

    def termination_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.termination_head(self._flat(z))[..., 0]

    def failure(self, z: torch.Tensor) -> torch.Tensor:
        """Predicted failure_discount ** (steps until termination) for latent z: (..., *latent) -> (...)
        in [0, 1]; the steps are capped at 3 / (1 - failure_discount), so states from which the
        data's policies never fail get about 0.05."""
        return torch.sigmoid(self.failure_logits(z))

    def failure_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of `failure`: about k * log(failure_discount), k the predicted steps to failure."""
        require(
            self.failure_head is not None,
            "this world model has no failure head (trained with failure_weight 0 or by an older "
            "version); retrain it, or plan without the failure objective",
        )
        return self.failure_head(self._flat(z))[..., 0]

    def inverse_dynamics(self, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        """Action logits (Discrete) or scaled action (Box) that led from z to z_next: (..., A)."""
        return self.inverse_head(torch.cat([self._flat(z), self._flat(z_next)], dim=-1))

    # ---- adapters ----
    def as_tensordict_module(self):
        """A TensorDictModule mapping ("latent", "action") -> ("next", "latent"): one transition, as
        stored data lays it out. A TorchRL env steps with `as_torchrl_env`, which writes root keys."""
        from tensordict.nn import TensorDictModule

        return TensorDictModule(
            _PredictStep(self), in_keys=["latent", "action"], out_keys=[("next", "latent")]
        )

    def as_torchrl_env(self, start: torch.Tensor | None = None, **kwargs):
        """A TorchRL `ModelBasedEnvBase` stepping inside this model: `env.rollout(H, policy)`
        imagines H steps (latent, reward and terminated from this model, equal to `rollout`,
        `reward` and `termination(...) > termination_threshold`). Resets draw start latents
        (K, *latent) from `start`, or take `env.reset(td, set_state=True)`'s "latent". Needs the
        `[torchrl]` extra; keyword arguments: `batch_size`, `termination_threshold`
        (`vjepa_agent.torchrl_env.WorldModelEnv`)."""
        from vjepa_agent.errors import require_extra

        require_extra("torchrl", "torchrl", "as_torchrl_env builds a TorchRL env")
        from vjepa_agent.torchrl_env import WorldModelEnv

        return WorldModelEnv(self, start, **kwargs)

    def imagined_env(self, real_env, **kwargs):
        """A gymnasium.Env that steps inside this model, reset from real observations of `real_env`."""
        from vjepa_agent.imagined_env import ImaginedEnv

        return ImaginedEnv(self, real_env, **kwargs)

    def imagined_vector_env(self, real_env, num_envs: int, **kwargs):
        """A gymnasium VectorEnv of `num_envs` imagined envs stepped in one predictor call (same-step
        autoreset from real observations of `real_env`); equal to `num_envs` `imagined_env`s."""
        from vjepa_agent.imagined_env import ImaginedVectorEnv

        return ImaginedVectorEnv(self, real_env, num_envs, **kwargs)

    # ---- persistence ----
    def save_pretrained(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write model.safetensors + config.json (no pickle) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ckpt.save_weights(self, folder / "model.safetensors")
        ckpt.write_json(
            {"format": FORMAT, "config": to_dict(self.cfg), "env": self.env, **(extra or {})},
            folder / "config.json",
        )
        return folder

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, map_location: str | torch.device = "cpu"
    ) -> WorldModel:
        """Load a folder written by `save_pretrained`; missing or mismatched weights are errors."""
        folder = Path(folder)
        require(
            folder.is_dir(),
            f"world-model folder '{folder}' does not exist; train one with train_world_model.py",
        )
        meta = ckpt.read_json(folder / "config.json")
        require(
            meta.get("format") == FORMAT,
            f"'{folder / 'config.json'}' is not a vjepa_agent world model",
        )
        cfg = _config_from_dict(meta["config"])
        model = cls(cfg, meta["env"])
        ckpt.load_weights(model, folder / "model.safetensors")
        return model.to(map_location).eval()


class _PredictStep(nn.Module):
    def __init__(self, wm: WorldModel):
        super().__init__()
        self.wm = wm

    def forward(self, latent: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.wm.predict(latent, action)


def _config_from_dict(d: dict[str, Any]) -> WorldModelConfig:
    d = dict(d)
    # folders written before these options: separate action tokens, no previous action
    d.setdefault("fuse_action", False)
    d.setdefault("previous_action", False)
    d.setdefault("failure_weight", 0.0)  # and no failure head
    d.setdefault("pixel_encoder", "vit")
    # folders written with options since removed: only their defaults load
    require(
        d.pop("pooling", "meanmax") == "meanmax",
        "this world model's learned encoder flattens its tokens (pooling flatten), which this "
        "version does not have; retrain it",
    )
    require(
        not d.pop("pca_dim", 0) and d.pop("encoder_mode", "frozen") == "frozen",
        "this world model was trained with a learned projection of frozen features (pca_dim) or "
        "an EMA-trained ViT (encoder_mode ema), which this version does not have; retrain it",
    )

    enc = d.pop("encoder")
    enc = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in enc.items()})
    known = {f.name for f in dataclasses.fields(WorldModelConfig)}
    unknown = set(d) - known
    if unknown:
        raise UserError(
            f"world-model config has unknown keys {sorted(unknown)}; was it written by a newer version?"
        )
    for k in ("data", "out"):
        if k in d:
            d[k] = Path(d[k])
    return WorldModelConfig(**d, encoder=enc)
