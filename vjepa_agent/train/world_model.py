"""Training the action-conditioned world model on a rollout store, and measuring it on held-out episodes.

Two loops, by the encoder:
- fixed encoders (the state normaliser, object moments, the frozen ViT + PCA): every transition
  is encoded once (`cache_latents`), and the predictor and heads learn on those latents with
  teacher forcing plus a multi-step rollout loss, as V-JEPA 2-AC trains its predictor;
- learned pixel encoders (jepa, reconstruction): `_train_learned_encoder` trains the ViT with the
  predictor and heads (`learned_encoder_losses`: targets from the encoder under stop-gradient or
  an EMA copy, anti-collapse terms or a pixel decoder), under Accelerate on one or many processes;
  then, with `frozen_steps`, the encoder is frozen and a fresh predictor and heads train on its
  cached latents in the first loop (`encoder_from` starts there from a trained model's encoder).
`evaluate` and `state_readout` measure either kind on held-out episodes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tensordict import TensorDict
from tqdm.auto import tqdm

from vjepa_agent import checkpoint as ckpt
from vjepa_agent import seeding
from vjepa_agent.config import WorldModelConfig, save_yaml
from vjepa_agent.data.rollouts import RolloutStore
from vjepa_agent.errors import UserError, require
from vjepa_agent.jepa import ema_update_
from vjepa_agent.metrics import effective_rank
from vjepa_agent.schedules import lr_at
from vjepa_agent.threads import torch_threads
from vjepa_agent.train.tracking import check_tracker, end_tracking, log_with, start_tracking
from vjepa_agent.world_model import WorldModel

log = logging.getLogger("vjepa_agent.world_model")


def env_spec_from_store(store: RolloutStore) -> dict[str, Any]:
    """What the world model must know about the env: id, obs mode, shapes, action space."""
    meta, data = store.meta, store.chunks[0]
    spec = {
        "env_id": meta["env_id"],
        "obs": meta["obs"],
        "action_space": meta["action_space"],
        "observation_shape": list(data["observation"].shape[1:]),
        "size": meta.get("size"),
        "frame_stack": meta.get("frame_stack"),
        "grayscale": meta.get("grayscale", False),
        "crop": meta.get("crop"),
    }
    if meta["obs"] == "pixels":
        spec["pixel_shape"] = list(data["pixels"].shape[1:])
    return spec


def _obs_key(model: WorldModel) -> str:
    return "pixels" if model.env["obs"] == "pixels" else "observation"


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count half)."""
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    for v in scores.unique():  # average ranks of ties
        tie = scores == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def target_latents(
    model: WorldModel, target_encoder, next_obs: torch.Tensor, actions
) -> torch.Tensor:
    """Target latents (B, T, *latent) of next observations (B, T, ...) reached by actions (B, T[, A])."""
    b, t = next_obs.shape[:2]
    z = target_encoder(next_obs.reshape(b * t, *next_obs.shape[2:]))
    z = z.reshape(b, t, *z.shape[1:])
    if model.prev_action_dims:
        z = torch.cat([z, model.action_features(actions)], dim=-1)
    return z


def failure_target(steps_to_termination: torch.Tensor, cfg: WorldModelConfig) -> torch.Tensor:
    """The failure head's regression target: logit(discount ** k), k = steps to termination capped
    at 3 / (1 - discount) (where discount ** k < 0.05; episodes that never terminate get the cap).
    Regressing logits, not probabilities, keeps states far from failure distinct: that is where
    a planner works, and where a probability loss has almost no gradient."""
    cap = 3.0 / (1.0 - cfg.failure_discount)
    k = steps_to_termination.float().clamp(max=cap)
    p = cfg.failure_discount**k
    return torch.log(p) - torch.log1p(-p.clamp(max=1 - 1e-6))


def world_model_losses(
    model: WorldModel,
    z: torch.Tensor,
    target: torch.Tensor,
    batch,
    cfg: WorldModelConfig,
    head_rows=None,
) -> dict[str, torch.Tensor]:
    """Teacher forcing + multi-step rollout + heads on latents z (B, T, *latent) and their targets.

    `head_rows` (optional, (M,) cached transitions with ("next", "latent") and the head targets)
    trains the heads on encoded latents of uniformly drawn transitions."""
    actions = batch["action"]
    # 2. teacher forcing: predict z_{t+1} from z_{<=t}, a_{<=t}
    pred = model.predict_sequence(z, actions)
    loss_tf = F.l1_loss(pred, target)
    # 3. rollout: from z_0, feed predictions back for K steps
    k = cfg.rollout_steps
    roll = model.rollout(z[:, 0], actions[:, :k])  # (B, K, *latent)
    loss_ro = F.l1_loss(roll, target[:, :k])
    # 4. heads on predicted next latents (windows) and on encoded ones: `head_rows`, transitions
    # drawn uniformly (windows of seq_len under-sample the last steps of episodes, where
    # terminations are), else the windows' own targets
    # the heads see predictions but do not steer them (detached): the predictor answers to the
    # latent losses only (CartPole pixels, 10k random steps rendered at 2x with a crop that showed
    # the pole only: 1-step error 0.528 -> 0.501 x copy-last, 10-step 0.428 -> 0.422; one run each)
    enc = head_rows if head_rows is not None else batch
    pred_h = pred.detach()
    enc_latent = head_rows["next", "latent"] if head_rows is not None else target
    term, term_enc = (b["next", "terminated"].float()[..., 0] for b in (batch, enc))
    reward, reward_enc = (b["next", "reward"].float()[..., 0] for b in (batch, enc))
    pos_weight = torch.tensor(10.0, device=term.device)
    loss_term = 0.5 * (
        F.binary_cross_entropy_with_logits(
            model.termination_logits(pred_h), term, pos_weight=pos_weight
        )
        + F.binary_cross_entropy_with_logits(
            model.termination_logits(enc_latent), term_enc, pos_weight=pos_weight
        )
    )
    loss_rew = 0.5 * (
        F.mse_loss(model.reward(pred_h), reward) + F.mse_loss(model.reward(enc_latent), reward_enc)
    )
    total = (
        loss_tf
        + cfg.rollout_weight * loss_ro
        + cfg.termination_weight * loss_term
        + cfg.reward_weight * loss_rew
    )
    # failure: logit of discount ** (steps to termination), capped (see failure_target)
    loss_fail = torch.zeros((), device=z.device)
    if model.failure_head is not None:
        fail, fail_enc = (failure_target(b["steps_to_termination"], cfg) for b in (batch, enc))
        loss_fail = 0.5 * (
            F.smooth_l1_loss(model.failure_logits(pred_h), fail)
            + F.smooth_l1_loss(model.failure_logits(enc_latent), fail_enc)
        )
        total = total + cfg.failure_weight * loss_fail
    return {
        "loss": total,
        "teacher_forcing": loss_tf.detach(),
        "rollout": loss_ro.detach(),
        "termination": loss_term.detach(),
        "reward": loss_rew.detach(),
        "failure": loss_fail.detach(),
        "latents": target.detach(),
    }


def sigreg(z: torch.Tensor, generator: torch.Generator, projections: int = 64) -> torch.Tensor:
    """SIGReg (LeJEPA): how far latents z (M, Z) are from a standard Gaussian, on random unit
    directions: the Epps-Pulley statistic, a weighted squared distance between the empirical
    characteristic function of each 1-D projection and exp(-t^2 / 2), at 17 points t in [-3, 3].
    0 for Gaussian latents; a constant latent scores about M * 0.5."""
    dirs = F.normalize(
        torch.randn(z.shape[-1], projections, generator=generator).to(z.device, z.dtype), dim=0
    )
    proj = (z - z.mean(0)) @ dirs  # (M, P)
    t = torch.linspace(-3, 3, 17, device=z.device, dtype=z.dtype)
    xt = proj[..., None] * t  # (M, P, K)
    gauss = torch.exp(-0.5 * t**2)
    err = (xt.cos().mean(0) - gauss) ** 2 + xt.sin().mean(0) ** 2  # (P, K)
    return (err * gauss).mean() * z.shape[0]


def temporal_contrast(pred: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of predicted latents pred (B, K, Z) against targets (B, K, Z): row (b, k) must score
    its own target highest, by cosine similarity / temperature, among all B * K targets (the
    other K - 1 steps of its window are the hard negatives). ln(B * K) for a constant latent."""
    p = F.normalize(pred.flatten(0, 1), dim=-1)
    y = F.normalize(target.flatten(0, 1), dim=-1)
    logits = p @ y.T / temperature  # (B*K, B*K)
    return F.cross_entropy(logits, torch.arange(len(p), device=p.device))


def anti_collapse_terms(
    z: torch.Tensor, cfg: WorldModelConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The learned latent's anti-collapse terms on student latents z (B, T, Z) of B windows:
    VICReg variance and covariance over all B * T latents, variance over time within each window
    relative to the batch's, SIGReg. Each is 0 at weight 0 (not computed)."""
    flat = z.reshape(-1, z.shape[-1])
    zero = torch.zeros((), device=z.device)
    out = dict(variance=zero, covariance=zero, time_variance=zero, sigreg=zero)
    batch_std = (flat.var(0) + 1e-4).sqrt()  # (Z,)
    if cfg.variance_weight:
        out["variance"] = F.relu(1.0 - batch_std).mean()
    if cfg.covariance_weight:
        centred = flat - flat.mean(0)
        cov = centred.T @ centred / (len(flat) - 1)
        out["covariance"] = (cov - torch.diag(torch.diag(cov))).pow(2).sum() / flat.shape[-1]
    if cfg.time_variance_weight:
        time_std = (z.var(1) + 1e-4).sqrt()  # (B, Z): over the steps of each window
        # relative to the batch's std where that is >= 1 (the variance hinge's floor), so scaling
        # a slow dimension up does not satisfy it, and a constant latent still fails it
        out["time_variance"] = F.relu(0.3 - time_std / batch_std.clamp_min(1.0)).mean()
    if cfg.sigreg_weight:
        out["sigreg"] = sigreg(flat, generator)
    return out


def random_shift(frames: torch.Tensor, shift: tuple[int, int], generator) -> torch.Tensor:
    """Frames (..., C, T, H, W) with each leading index's stack moved by its own integer offset,
    up to shift = (rows, columns) pixels either way, the edge pixels repeated beyond the border
    (all T frames of a stack move together, so its motion is kept)."""
    lead, (c, t, h, w) = frames.shape[:-4], frames.shape[-4:]
    x = frames.reshape(-1, c, t, h, w)
    n = x.shape[0]
    for dim, size, limit in ((3, h, shift[0]), (4, w, shift[1])):
        if limit:
            offset = torch.randint(-limit, limit + 1, (n, 1), generator=generator).to(x.device)
            index = (torch.arange(size, device=x.device) + offset).clamp(0, size - 1)  # (N, size)
            shape = [n, 1, 1, 1, 1]
            shape[dim] = size
            x = x.gather(dim, index.view(shape).expand(x.shape))
    return x.reshape(*lead, c, t, h, w)


def learned_encoder_losses(
    model: WorldModel, target_encoder, batch: dict, cfg: WorldModelConfig, generator
) -> dict[str, torch.Tensor]:
    """One step's losses for a learned pixel encoder (jepa, reconstruction) on B windows of K
    transitions. `batch`: "obs" (B, K+1, C, T, H, W) uint8 (the window's K+1 observations),
    "prev_action" and "valid" (B, K+1) (the action before each, and whether there was one),
    "action" (B, K[, A]), "terminated", "reward", "steps_to_termination" (B, K) of the
    transitions.

    1. student latents of all K+1 observations; targets: the target encoder's latents of the
       last K (no gradient), with the actions that led to them
    2. teacher forcing (each next latent from the true one) and a K-step imagined rollout from
       the first, MSE, step k weighted rho ** k
    3. heads on the encoded and on the imagined latents (their gradients reach the encoder
       unless head_gradients is off)
    4. jepa: anti-collapse terms on the student latents; reconstruction: the pixel decoder
    """
    obs, actions = batch["obs"], batch["action"]
    k = obs.shape[1] - 1
    if any(cfg.random_shift):
        obs = random_shift(obs, cfg.random_shift, generator)
    # 1. student and target latents
    z = model.encode(obs, batch["prev_action"], batch["valid"])  # (B, K+1, Z+A)
    with torch.no_grad():
        if target_encoder is model.encoder:  # stop-gradient (and reconstruction): reuse z
            target = z[:, 1:].detach()
        else:
            target = model.encode(obs[:, 1:], actions, None, encoder=target_encoder)
    target_obs = model.observation_part(target)
    rho = cfg.rollout_discount ** torch.arange(k, device=z.device, dtype=z.dtype)  # (K,)
    # 2. teacher forcing and rollout
    pred = model.predict_sequence(z[:, :-1], actions)  # (B, K, Z+A)
    loss_tf = F.mse_loss(model.observation_part(pred), target_obs)
    roll = model.rollout(z[:, 0], actions)  # (B, K, Z+A)
    per_step = (model.observation_part(roll) - target_obs).pow(2).mean(dim=(0, 2))  # (K,)
    loss_ro = (rho * per_step).sum()
    # 3. heads
    heads = head_losses(model, z, roll, batch, cfg, rho)
    total = (
        loss_tf
        + cfg.rollout_weight * loss_ro
        + cfg.termination_weight * heads["termination"]
        + cfg.reward_weight * heads["reward"]
        + cfg.failure_weight * heads["failure"]
    )
    # 4. what keeps the latent informative
    z_obs = model.observation_part(z)  # (B, K+1, Z)
    zero = torch.zeros((), device=z.device)
    terms, loss_inv, loss_rec = {}, zero, zero
    if model.decoder is None:
        # the contrast's targets keep their gradient when they are the student's own latents
        contrast_target = target if target_encoder is not model.encoder else z[:, 1:]
        terms, loss_inv = jepa_terms(
            model, z_obs, (pred, roll), contrast_target, actions, cfg, generator
        )
        total = (
            total
            + cfg.variance_weight * terms["variance"]
            + cfg.covariance_weight * terms["covariance"]
            + cfg.time_variance_weight * terms["time_variance"]
            + cfg.sigreg_weight * terms["sigreg"]
        )
        # each is exactly 0 where jepa_terms did not compute it
        total = total + cfg.contrast_weight * terms["contrast"] + cfg.inverse_weight * loss_inv
    else:
        frames = model.encoder.normalise(obs.flatten(0, 1))
        loss_rec = F.mse_loss(model.decoder(z_obs.flatten(0, 1)), frames)
        total = total + cfg.reconstruction_weight * loss_rec
    return {
        "loss": total,
        "teacher_forcing": loss_tf.detach(),
        "rollout": loss_ro.detach(),
        **{k_: v.detach() for k_, v in heads.items()},
        "inverse": loss_inv.detach(),
        "reconstruction": loss_rec.detach(),
        **{k_: v.detach() for k_, v in terms.items()},
        "latents": z_obs.detach(),
    }


def head_losses(
    model: WorldModel,
    z: torch.Tensor,
    roll: torch.Tensor,
    batch: dict,
    cfg: WorldModelConfig,
    rho: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The termination, reward and failure heads on the encoded latents z (B, K+1, Z+A) and on
    the imagined ones roll (B, K, Z+A), against the K transitions of `batch`; imagined step k
    weighted rho ** k. The failure loss is 0 without a failure head."""
    enc_next = z[:, 1:] if cfg.head_gradients else z[:, 1:].detach()
    imagined = roll if cfg.head_gradients else roll.detach()
    term, reward = batch["terminated"].float(), batch["reward"].float()
    pos_weight = torch.tensor(10.0, device=z.device)

    def bce(logits):
        per = F.binary_cross_entropy_with_logits(
            logits, term, pos_weight=pos_weight, reduction="none"
        )
        return per.mean(0)  # (K,)

    out = {
        "termination": bce(model.termination_logits(enc_next)).mean()
        + (rho * bce(model.termination_logits(imagined))).sum(),
        "reward": F.mse_loss(model.reward(enc_next), reward)
        + (rho * (model.reward(imagined) - reward).pow(2).mean(0)).sum(),
        "failure": torch.zeros((), device=z.device),
    }
    if model.failure_head is not None:
        # observation t is steps_to_termination[t] transitions from the terminal one
        fail_now = failure_target(batch["steps_to_termination"], cfg)  # (B, K)
        fail_next = failure_target((batch["steps_to_termination"] - 1).clamp(min=0), cfg)
        enc_now = z[:, :-1] if cfg.head_gradients else z[:, :-1].detach()
        imagined_fail = F.smooth_l1_loss(
            model.failure_logits(imagined), fail_next, reduction="none"
        )
        out["failure"] = (
            F.smooth_l1_loss(model.failure_logits(enc_now), fail_now)
            + (rho * imagined_fail.mean(0)).sum()
        )
    return out


def jepa_terms(
    model: WorldModel,
    z_obs: torch.Tensor,
    predictions: tuple[torch.Tensor, ...],
    contrast_target: torch.Tensor,
    actions: torch.Tensor,
    cfg: WorldModelConfig,
    generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """What keeps a JEPA latent informative, on the student's latents z_obs (B, K+1, Z): the
    anti-collapse terms, the temporal contrast of each predicted sequence (B, K, Z+A) against
    contrast_target, and the inverse-dynamics loss over cfg.inverse_gap steps (each 0 at weight
    0). Returns (terms, inverse loss), unweighted."""
    terms = anti_collapse_terms(z_obs, cfg, generator)
    terms["contrast"] = torch.zeros((), device=z_obs.device)
    if cfg.contrast_weight:
        # one-step predictions and the K-step imagined rollout, each against every target
        targets = model.observation_part(contrast_target)
        terms["contrast"] = 0.5 * sum(
            temporal_contrast(model.observation_part(p), targets, cfg.contrast_temperature)
            for p in predictions
        )
    loss_inv = torch.zeros((), device=z_obs.device)
    g, k1 = cfg.inverse_gap, z_obs.shape[1]
    if cfg.inverse_weight and g < k1:
        logits = model.inverse_dynamics(z_obs[:, :-g], z_obs[:, g:])  # (B, K+1-g, A)
        if model.action_kind == "discrete":
            a = actions[:, : k1 - g].long() - int(model.env["action_space"].get("start", 0))
            loss_inv = F.cross_entropy(logits.flatten(0, 1), a.flatten())
        else:
            loss_inv = F.mse_loss(logits, model.action_features(actions[:, : k1 - g]))
    return terms, loss_inv


class LearnedEncoderObjective(torch.nn.Module):
    """The world model and its target encoder as one module whose forward is one step's losses
    (`learned_encoder_losses`): what `accelerator.prepare` wraps, so DDP averages the gradients
    of every part the losses use. The target encoder's parameters are frozen (no gradients)."""

    def __init__(self, model: WorldModel, target_encoder, cfg: WorldModelConfig, generator):
        super().__init__()
        self.model, self.cfg, self.generator = model, cfg, generator
        # registered only when it is a copy (stopgrad: the model's own encoder)
        self.target = target_encoder if target_encoder is not model.encoder else None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        target = self.target if self.target is not None else self.model.encoder
        return learned_encoder_losses(self.model, target, batch, self.cfg, self.generator)


class WindowSampler:
    """Training windows of K consecutive transitions for a learned pixel encoder, from pixels held
    in memory (uint8; 10k CartPole stacks of 1 x 4 x 32 x 128 are 16 MB)."""

    def __init__(self, store: RolloutStore, episodes, window: int, device):
        data = store.data
        self.pixels = torch.as_tensor(data["pixels"][:])
        self.next_pixels = torch.as_tensor(data["next", "pixels"][:])
        self.action = torch.as_tensor(data["action"][:])
        self.first = torch.as_tensor(data["step"][:]) == 0
        self.terminated = torch.as_tensor(data["next", "terminated"][:]).reshape(len(store), -1)[
            :, 0
        ]
        self.reward = torch.as_tensor(data["next", "reward"][:]).reshape(len(store), -1)[:, 0]
        self.steps_to_termination = store.steps_to_termination()
        self.episodes, self.window, self.device = episodes, window, device

    def sample(self, batch_size: int, generator) -> dict[str, torch.Tensor]:
        rows = sample_windows(self.episodes, batch_size, self.window, generator)  # (B, K)
        prev = self.action[(rows - 1).clamp(min=0)]
        obs = torch.cat([self.pixels[rows[:, :1]], self.next_pixels[rows]], dim=1)  # (B, K+1, ...)
        out = {
            "obs": obs,
            # the action before each observation: none before a reset, a_t before observation t+1
            "prev_action": torch.cat([prev[:, :1], self.action[rows]], dim=1),
            "valid": torch.cat(
                [~self.first[rows[:, :1]], torch.ones_like(rows, dtype=torch.bool)], 1
            ),
            "action": self.action[rows],
            "terminated": self.terminated[rows],
            "reward": self.reward[rows],
            "steps_to_termination": self.steps_to_termination[rows],
        }
        return {key: v.to(self.device) for key, v in out.items()}


@torch.no_grad()
def evaluate(
    model: WorldModel, target_encoder, store: RolloutStore, episodes, cfg: WorldModelConfig, device
) -> dict[str, float]:
    """Held-out latent prediction error at 1..eval_horizon steps beside copy-last; termination ROC-AUC."""
    model.eval()
    key = _obs_key(model)
    out: dict[str, float] = {}
    gen = seeding.generator("wm-eval", cfg.seed)
    horizon = cfg.eval_horizon
    lengths = {e.id: e.length for e in store.episodes()}
    long_enough = [e for e in episodes if lengths[int(e)] >= horizon]
    if long_enough:
        batch = store.sample_sequences(256, horizon, gen, episodes=long_enough).to(device)
        # (B, *latent) student, as when planning
        z0 = model.encode(batch[key][:, 0], batch["prev_action"][:, 0], batch["step"][:, 0] > 0)
        # errors on what the observations give (not the previous-action features, known exactly)
        first = target_encoder(batch[key][:, 0])  # observation part of the first latents
        target = model.observation_part(
            target_latents(model, target_encoder, batch["next", key], batch["action"])
        )
        traj = model.observation_part(model.rollout(z0, batch["action"]))
        dims = tuple(range(2, traj.ndim))
        err = (traj - target).abs().mean(dim=dims).mean(0)  # (H,)
        base = (first[:, None] - target).abs().mean(dim=dims).mean(0)
        for h in sorted({1, min(5, horizon), horizon}):
            out[f"latent_error_{h}"] = float(err[h - 1])
            out[f"copy_last_error_{h}"] = float(base[h - 1])
            out[f"error_ratio_{h}"] = float(err[h - 1] / base[h - 1].clamp_min(1e-8))
    # termination: every held-out transition, head on the encoded real next observation and on
    # the one-step prediction from the current observation
    rows = store.episode_indices(torch.as_tensor(episodes))
    scores_enc, scores_pred, labels, scores_fail = [], [], [], []
    for i in range(0, len(rows), 512):
        sel = rows[i : i + 512]
        td = store.data[sel].to(device)
        prev = store.data["action"][(sel - 1).clamp(min=0)].to(device)
        nxt = target_latents(
            model, target_encoder, td["next", key][:, None], td["action"][:, None]
        )[:, 0]
        scores_enc.append(model.termination(nxt).cpu())
        if model.failure_head is not None:
            scores_fail.append(model.failure_logits(nxt).cpu())
        pred = model.predict(model.encode(td[key], prev, td["step"] > 0), td["action"])
        scores_pred.append(model.termination(pred).cpu())
        labels.append(td["next", "terminated"][..., 0].cpu())
    labels = torch.cat(labels)
    out["termination_auc"] = roc_auc(torch.cat(scores_enc), labels)
    out["termination_auc_predicted"] = roc_auc(torch.cat(scores_pred), labels)
    if scores_fail:  # does the failure head rank states by how soon the episode fails?
        soon = store.steps_to_termination()[rows] < 10
        out["failure_auc_10_steps"] = roc_auc(torch.cat(scores_fail), soon)
    out["holdout_transitions"] = int(len(rows))
    model.train()
    return out


def _gather(store: RolloutStore, key, rows: torch.Tensor) -> torch.Tensor:
    """store.data[key][rows] without materialising the whole store (rows sorted, global)."""
    out, offset = [], 0
    for chunk in store.chunks:
        n = chunk.batch_size[0]
        sel = rows[(rows >= offset) & (rows < offset + n)] - offset
        if len(sel):
            out.append(torch.as_tensor(chunk[key][sel]))
        offset += n
    return torch.cat(out)


def _sample_frames(store: RolloutStore, rows: torch.Tensor, n: int, name: str, seed: int):
    """Pixels of up to n of `rows`, drawn without replacement by the (name, seed) stream."""
    pick = rows[torch.randperm(len(rows), generator=seeding.generator(name, seed))[:n]]
    return _gather(store, "pixels", pick.sort().values)


@torch.no_grad()
def cache_latents(model: WorldModel, store: RolloutStore, device, batch: int = 512) -> TensorDict:
    """Encode every transition once (frozen encoder): (N,) TensorDict with "latent", ("next", "latent"),
    "action", ("next", "reward"), ("next", "terminated"), rows in the order of store.data.

    Within an episode the next observation of row i is the observation of row i + 1, so only the
    last transition of each episode has its next observation encoded separately.
    """
    key = _obs_key(model)
    encode = model.encode
    parts = []
    for chunk in store.chunks:
        n = chunk.batch_size[0]
        actions = torch.as_tensor(chunk["action"]).to(device)
        prev = actions[
            (torch.arange(n, device=device) - 1).clamp(min=0)
        ]  # the action before each row
        first = torch.as_tensor(chunk["step"]).to(device) == 0  # nothing came before these rows
        latent = torch.cat(
            [
                encode(
                    torch.as_tensor(chunk[key][i : i + batch]).to(device),
                    prev[i : i + batch],
                    ~first[i : i + batch],
                )
                for i in range(0, n, batch)
            ]
        )  # (n, *latent)
        episode = torch.as_tensor(chunk["episode"])
        last = torch.ones(n, dtype=torch.bool)
        last[:-1] = episode[1:] != episode[:-1]  # rows whose next observation is not the next row's
        next_latent = torch.empty_like(latent)
        next_latent[:-1] = latent[1:]
        rows = last.nonzero().squeeze(1)
        for i in range(0, len(rows), batch):
            sel = rows[i : i + batch]
            next_latent[sel.to(latent.device)] = encode(
                torch.as_tensor(chunk["next", key][sel]).to(device), actions[sel.to(device)]
            )
        parts.append(
            TensorDict(
                {
                    "latent": latent,
                    "action": actions,
                    "next": {
                        "latent": next_latent,
                        "reward": torch.as_tensor(chunk["next", "reward"]).to(device),
                        "terminated": torch.as_tensor(chunk["next", "terminated"]).to(device),
                    },
                },
                batch_size=[n],
            )
        )
    return torch.cat(parts)


def _resume(cfg, out, modules, optimizer, generators, rank: int = 0) -> tuple[int, list]:
    """With cfg.resume == "auto", restore the newest loadable checkpoint: (its step, its log
    history); else (0, [])."""
    if cfg.resume != "auto":
        return 0, []
    state = ckpt.load_latest_loop_state(out, modules, optimizer, generators, rank)
    if state is None:
        log.info("no checkpoint under %s yet: starting at step 0", out)
        return 0, []
    print(f"resuming from step {state['step']} of {out / 'checkpoints'}")
    return int(state["step"]), list(state["history"])


def _restart_metrics(out: Path, history: list[dict]) -> None:
    """Start out/metrics.jsonl at the run's history so far: a resumed run's, from its checkpoint
    (dropping the lines that a killed run logged after it), so that it ends with the lines of the
    run never interrupted; empty for a fresh run."""
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))


def _log_row(accelerator: Accelerator, out: Path, row: dict[str, float]) -> None:
    """One log step: the row to the tracker, and appended to out/metrics.jsonl by the main
    process (the file is closed at once, so the line is on disk while the run goes on)."""
    accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


def _maybe_checkpoint(
    cfg, out, done, modules, optimizer, generators, history, rank=0, barrier=lambda: None
) -> None:
    """Every cfg.checkpoint_every steps (not at the end: the final model is saved by _finish)."""
    if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
        state = {"history": history}
        ckpt.save_loop_state(
            out, done, modules, optimizer, generators, state, cfg.keep_checkpoints, rank, barrier
        )


def world_model_lr(cfg: WorldModelConfig, step: int) -> float:
    """The learning rate at `step`: 5 % warmup from lr / 10, then cosine to lr / 20."""
    return lr_at(
        step,
        total=cfg.steps,
        warmup=max(1, cfg.steps // 20),
        start_lr=cfg.lr / 10,
        lr=cfg.lr,
        final_lr=cfg.lr / 20,
    )


def sample_windows(episodes, batch_size: int, seq_len: int, generator) -> torch.Tensor:
    """(B, T) row indices of windows of seq_len consecutive transitions inside one episode each."""
    starts = torch.tensor([e.start for e in episodes])
    counts = torch.tensor([max(0, e.length - seq_len + 1) for e in episodes])
    require(
        int(counts.sum()) > 0, f"no training episode has {seq_len} transitions; lower --seq-len"
    )
    cum = counts.cumsum(0)
    r = torch.randint(int(cum[-1]), (batch_size,), generator=generator)
    e = torch.searchsorted(cum, r, right=True)
    first = starts[e] + r - (cum[e] - counts[e])
    return first[:, None] + torch.arange(seq_len)


def train_world_model(
    cfg: WorldModelConfig, progress: bool = True
) -> tuple[WorldModel, dict[str, Any]]:
    """Train on cfg.data, evaluate on held-out episodes, save into cfg.out; returns (model, summary)."""
    cfg.validate()
    check_tracker(cfg.tracker, "world-model training")
    require(
        int(os.environ.get("WORLD_SIZE", "1")) == 1
        or cfg.pixel_encoder in ("jepa", "reconstruction"),
        "train_world_model.py trains cached latents (state, moments, frozen vit) in one process; "
        "launch it with --num_processes 1 or plain python (jepa and reconstruction run on many)",
    )
    store = RolloutStore.open(cfg.data)
    spec = env_spec_from_store(store)
    train_ids, holdout_ids = store.split_episodes(cfg.holdout, seed=cfg.seed)
    require(
        len(train_ids) > 0 and len(holdout_ids) > 0,
        f"rollout store '{cfg.data}' has too few episodes to hold some out",
    )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # Accelerate owns devices, processes and the tracker (cached latents: one process)
    accelerator = Accelerator(log_with=log_with(cfg.tracker), project_dir=str(out))
    save_yaml(cfg, out / "train_config.yaml")

    # 1. model; the state encoder's normalisation (or the pixel encoder's PCA) comes from the training data
    model = build_world_model(cfg, store, spec, train_ids)
    model.to(accelerator.device).train()
    # 2. the loop; 3. held-out evaluation, save
    if model.learned_encoder:
        return _train_learned_encoder(
            cfg, accelerator, model, store, spec, train_ids, holdout_ids, out, progress
        )
    run = dict(store=store, spec=spec, cfg=cfg, train_ids=train_ids, holdout_ids=holdout_ids)
    return _train_on_cached_latents(accelerator, model, out, progress, **run)


def build_world_model(
    cfg: WorldModelConfig, store: RolloutStore, spec: dict[str, Any], train_ids
) -> WorldModel:
    """A new WorldModel (initialised from cfg.seed) whose fixed parts are fitted on the training
    episodes: the state normaliser, the object moments' colours and scales, or the frozen ViT's
    PCA (the ViT from `encoder_init` when given). A learned encoder only starts from
    `encoder_init`: it learns from the first step."""
    torch.manual_seed(cfg.seed)
    model = WorldModel(cfg, spec)
    train_rows = store.episode_indices(torch.as_tensor(train_ids))
    moments = spec["obs"] == "pixels" and cfg.pixel_encoder == "moments"
    if model.learned_encoder:
        if cfg.encoder_from:
            _load_world_model_encoder(model, cfg)
        elif cfg.encoder_init:  # it learns from the first step on, starting from these weights
            encoder, _ = ckpt.load_encoder(cfg.encoder_init)
            ckpt.require_same_encoder(encoder.cfg, model.encoder.vit.cfg, cfg.encoder_init)
            model.encoder.vit.load_state_dict(encoder.state_dict())
    elif spec["obs"] == "state":
        model.encoder.fit(store.data["observation"][train_rows])
    elif moments:
        found = model.encoder.fit(_sample_frames(store, train_rows, 4096, "moments", cfg.seed))
        log.info("object moments: background %s, ink directions %s", *found.values())
    else:
        if cfg.encoder_init:
            encoder, _ = ckpt.load_encoder(cfg.encoder_init)
            ckpt.require_same_encoder(encoder.cfg, model.encoder.vit.cfg, cfg.encoder_init)
            model.encoder.vit.load_state_dict(encoder.state_dict())
        if cfg.latent == "compact":
            frames = _sample_frames(store, train_rows, 2048, "pca", cfg.seed)
            explained = model.encoder.fit_pca(frames)
            log.info(
                "PCA of frozen encoder tokens: %d components explain %.1f%% of the variance",
                cfg.latent_dim,
                100 * explained,
            )
    return model


def _load_world_model_encoder(model: WorldModel, cfg: WorldModelConfig) -> None:
    """model.encoder <- the pixel encoder of the world-model folder cfg.encoder_from; a one-line
    error when its settings or frames differ from this run's."""
    source = WorldModel.from_pretrained(cfg.encoder_from)
    same = ("pixel_encoder", "encoder", "latent_dim", "latent_norm")
    differ = [
        f"{k} {getattr(source.cfg, k)!r} (this run: {getattr(cfg, k)!r})"
        for k in same
        if getattr(source.cfg, k) != getattr(cfg, k)
    ]
    if list(source.env.get("pixel_shape") or []) != list(model.env["pixel_shape"]):
        differ.append(
            f"frames {source.env.get('pixel_shape')} (this run: {model.env['pixel_shape']})"
        )
    require(
        not differ,
        f"encoder_from '{cfg.encoder_from}' has another encoder: {'; '.join(differ)}",
    )
    model.encoder.load_state_dict(source.encoder.state_dict())


def _train_on_cached_latents(
    accelerator, model, out, progress, *, store, spec, cfg, train_ids, holdout_ids
):
    """The loop of a fixed encoder (state normaliser, object moments, frozen ViT + PCA): every
    transition is encoded once, and the predictor and heads learn on the cached latents
    (`_cached_loop`); then the held-out evaluation and the save."""
    device = accelerator.device
    optimizer = _frozen_encoder_optimizer(model, cfg)
    gen = seeding.generator("wm-batches", cfg.seed)
    modules = {"model": model}
    start_step, history = _resume(cfg, out, modules, optimizer, {"batches": gen})
    start_tracking(accelerator, cfg.tracker, out)
    _restart_metrics(out, history)
    loop = dict(store=store, train_ids=train_ids, optimizer=optimizer, gen=gen, history=history)
    train_seconds = _cached_loop(accelerator, model, out, progress, cfg, start_step, **loop)
    end_tracking(accelerator)

    # held-out evaluation, save
    run = dict(store=store, spec=spec, cfg=cfg, train_ids=train_ids, holdout_ids=holdout_ids)
    return _finish(model, model.encoder, history, train_seconds, device, out, **run)


def _frozen_encoder_optimizer(model, cfg) -> torch.optim.AdamW:
    """Freeze the encoder; AdamW over what still trains (predictor and heads)."""
    model.encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel over every tensor, as pretraining's AdamW
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def _cached_loop(
    accelerator,
    model,
    out,
    progress,
    cfg,
    start_step,
    *,
    store,
    train_ids,
    optimizer,
    gen,
    history,
    step_offset=0,
) -> float:
    """Steps start_step..cfg.steps of predictor and heads on cached latents of the (frozen)
    encoder; returns the seconds they took. Log rows go to `history` and out/metrics.jsonl
    numbered from step_offset (the second phase of a learned encoder follows its first).

    1. windows of cached latents, and transitions drawn uniformly for the heads; 2. the losses
    (`world_model_losses`); 3. backward, clip and one AdamW step; then the log and checkpoint.
    """
    device = accelerator.device
    cache = cache_latents(model, store, device)
    cache["steps_to_termination"] = store.steps_to_termination().to(device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    episodes = [e for e in store.episodes() if e.id in set(train_ids.tolist())]
    train_rows = store.episode_indices(torch.as_tensor(train_ids))
    modules = {"model": model}
    loss_fn = _cached_losses(model, cfg, compiled=cfg.compile == "on")
    # Cached latents on CPU: a step is a few small matmuls, which a second thread only slows down,
    # badly beside another busy process (state model, 300 steps next to a one-thread job: 3.6 s
    # with one thread, 151 s with two); a learned encoder keeps the threads.
    with torch_threads(1 if device.type == "cpu" else None):
        start = time.perf_counter()
        bar = tqdm(
            range(start_step, cfg.steps),
            desc="world model" if not step_offset else "predictor and heads (encoder frozen)",
            disable=not progress,
            dynamic_ncols=True,
        )
        for step in bar:
            lr = world_model_lr(cfg, step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            # 1. windows and head transitions; 2. losses; 3. step
            batch = cache[sample_windows(episodes, cfg.batch_size, cfg.seq_len, gen)].to(device)
            z, target = batch["latent"], batch["next", "latent"]
            pick = torch.randint(len(train_rows), (cfg.batch_size * cfg.seq_len,), generator=gen)
            head_rows = cache[train_rows[pick]].to(device)
            losses = loss_fn(z, target, _loss_inputs(batch), _loss_inputs(head_rows))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            optimizer.step()
            loss_value = float(losses["loss"].detach())
            if not math.isfinite(loss_value):
                raise UserError(f"world-model loss is {loss_value} at step {step}; lower --lr")
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                row = {k: float(v.detach()) for k, v in losses.items() if k != "latents"}
                row["step"], row["lr"] = step_offset + step + 1, lr
                row["effective_rank"] = effective_rank(losses["latents"])
                history.append(row)
                _log_row(accelerator, out, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", tf=f"{row['teacher_forcing']:.4f}")
            _maybe_checkpoint(cfg, out, step + 1, modules, optimizer, {"batches": gen}, history)
    return time.perf_counter() - start


LOSS_INPUTS = ("action", ("next", "terminated"), ("next", "reward"), "steps_to_termination")


def _loss_inputs(td: TensorDict) -> dict:
    """The entries `world_model_losses` reads, as a plain dict (what torch.compile traces)."""
    keys = LOSS_INPUTS + ((("next", "latent"),) if ("next", "latent") in td.keys(True) else ())
    return {k: td[k] for k in keys}


def _cached_losses(model: WorldModel, cfg: WorldModelConfig, compiled: bool):
    """`world_model_losses` of the cached-latent loop as (z, target, batch, head_rows) -> losses,
    through torch.compile when `compiled`. A compilation that fails (no C++ compiler, say)
    warns once and the loop goes on eager: the same losses, slower."""

    def losses(z, target, batch, head_rows):
        return world_model_losses(model, z, target, batch, cfg, head_rows)

    if not compiled:
        return losses
    compiled_losses = torch.compile(losses, dynamic=False)
    state = {"fn": None}

    def call(*args):
        if state["fn"] is not None:
            return state["fn"](*args)
        try:
            out = compiled_losses(*args)
            state["fn"] = compiled_losses
            return out
        except Exception as e:  # noqa: BLE001 - any backend failure: eager is always right
            first_line = str(e).splitlines()[0] if str(e) else ""
            logging.getLogger(__name__).warning(
                "torch.compile of the world-model losses failed (%s: %s); training eager "
                "(--compile off skips the attempt)",
                type(e).__name__,
                first_line,
            )
            state["fn"] = losses
            return losses(*args)

    return call


def _finish(
    model,
    target_encoder,
    history,
    train_seconds,
    device,
    out,
    *,
    store,
    spec,
    cfg,
    train_ids,
    holdout_ids,
    extra=None,
):
    """Held-out evaluation and the state readout, then weights, config and summary (the loop
    has written metrics.jsonl as it went)."""
    metrics = evaluate(model, target_encoder, store, holdout_ids, cfg, device)
    if spec["obs"] == "pixels":
        metrics.update(state_readout(model, store, train_ids, holdout_ids, device))
    summary = {
        **metrics,
        "env_id": spec["env_id"],
        "obs": spec["obs"],
        "pixel_encoder": cfg.pixel_encoder if spec["obs"] == "pixels" else None,
        "env_steps": len(store),
        "train_episodes": len(train_ids),
        "holdout_episodes": len(holdout_ids),
        "steps": cfg.steps,
        "train_seconds": train_seconds,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "effective_rank": history[-1]["effective_rank"] if history else float("nan"),
        **(extra or {}),
    }
    model.eval()
    model.save_pretrained(out, extra={"summary": summary})
    ckpt.write_json(summary, out / "summary.json")
    return model.cpu(), summary


def _train_learned_encoder(
    cfg, accelerator, model, store, spec, train_ids, holdout_ids, out, progress
):
    """The loop of a learned pixel encoder (jepa, reconstruction), under Accelerate (one process,
    or DDP over many: each rank draws its own windows, gradients are averaged, the EMA target is
    updated on the unwrapped modules, rank 0 evaluates and saves).

    1. a batch of windows of raw frames; 2. the losses (`learned_encoder_losses`); 3. backward
    and one AdamW step over encoder (at encoder_lr_scale), predictor and heads; 4. EMA target.
    """
    device = accelerator.device
    model.to(device).train()
    ema_target = cfg.pixel_encoder == "jepa" and cfg.target_encoder == "ema"
    target_encoder = (
        copy.deepcopy(model.encoder).requires_grad_(False) if ema_target else model.encoder
    )
    optimizer, params = _learned_encoder_optimizer(model, cfg)
    rank = accelerator.process_index
    gen = seeding.generator("wm-batches", cfg.seed, rank)
    reg_gen = seeding.generator("wm-sigreg", cfg.seed, rank)
    objective = LearnedEncoderObjective(model, target_encoder, cfg, reg_gen)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    episodes = [e for e in store.episodes() if e.id in set(train_ids.tolist())]
    sampler = WindowSampler(store, episodes, cfg.seq_len, device)
    modules = {"model": model, **({"model_target": target_encoder} if ema_target else {})}
    gens = {"batches": gen, "sigreg": reg_gen}
    start_step, history = _resume(cfg, out, modules, optimizer, gens, rank)
    start_tracking(accelerator, cfg.tracker, out)
    if accelerator.is_main_process:
        _restart_metrics(out, history)
    start = time.perf_counter()
    bar = tqdm(
        range(start_step, cfg.steps),
        desc="world model",
        disable=not (progress and accelerator.is_main_process),
        dynamic_ncols=True,
    )
    for step in bar:
        lr = world_model_lr(cfg, step)
        for g in optimizer.param_groups:
            g["lr"] = lr * g["scale"]
        # 1. windows; 2. losses; 3. step
        losses = objective(sampler.sample(cfg.batch_size, gen))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        accelerator.clip_grad_norm_(params, 20.0)
        optimizer.step()
        # 4. the EMA target follows the student (unwrapped modules, after the step)
        if ema_target:
            ema_update_(target_encoder, model.encoder, cfg.ema)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {k: float(v.detach()) for k, v in losses.items() if k != "latents"}
            if not math.isfinite(row["loss"]):
                raise UserError(f"world-model loss is {row['loss']} at step {step + 1}; lower --lr")
            row["step"], row["lr"] = step + 1, lr
            row["effective_rank"] = effective_rank(losses["latents"])
            history.append(row)
            _log_row(accelerator, out, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", ro=f"{row['rollout']:.4f}")
        _maybe_checkpoint(
            cfg,
            out,
            step + 1,
            modules,
            optimizer,
            gens,
            history,
            rank,
            accelerator.wait_for_everyone,
        )
    train_seconds = time.perf_counter() - start
    checksums = _rank_weight_sums(accelerator, model)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        end_tracking(accelerator)
        return model.cpu(), {}
    extra = {"world_size": accelerator.num_processes, "rank_weight_sums": checksums}
    if cfg.frozen_steps:
        extra["encoder_train_seconds"] = train_seconds
        train_seconds += _frozen_encoder_phase(
            accelerator, model, out, progress, cfg, store, train_ids, history
        )
    end_tracking(accelerator)
    # planning encodes with the student: measure the model as it will be used
    run = dict(store=store, spec=spec, cfg=cfg, train_ids=train_ids, holdout_ids=holdout_ids)
    wm, summary = _finish(
        model, model.encoder, history, train_seconds, device, out, **run, extra=extra
    )
    return wm, summary


def _learned_encoder_optimizer(model: WorldModel, cfg: WorldModelConfig):
    """AdamW over the encoder (its lr scaled by encoder_lr_scale), the predictor and the heads
    that the losses use, and those parameters (encoder first). Heads the losses leave unused are
    frozen: DDP wants every trained weight used."""
    if not (cfg.inverse_weight and model.decoder is None):
        model.inverse_head.requires_grad_(False)
    if model.failure_head is not None and not cfg.failure_weight:
        model.failure_head.requires_grad_(False)
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    ids = {id(p) for p in encoder_params}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder_params, "scale": cfg.encoder_lr_scale},
            {"params": others, "scale": 1.0},
        ],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        fused=True,
    )
    return optimizer, encoder_params + others


def _rank_weight_sums(accelerator: Accelerator, model: WorldModel) -> list[float]:
    """Every rank's sum of its weights (DDP keeps them equal; the summary shows they are)."""
    total = float(sum(p.detach().double().sum() for p in model.parameters()))
    return [float(c) for c in accelerator.gather(torch.tensor([total], device=accelerator.device))]


def _frozen_encoder_phase(accelerator, model, out, progress, cfg, store, train_ids, history):
    """The second phase of a learned encoder (cfg.frozen_steps > 0), on the main process: the
    encoder is frozen, every transition's latent cached, and the predictor and heads start from
    a fresh initialisation and train frozen_steps on the cached latents, the fixed encoders' loop
    (a fresh AdamW and learning rate schedule, frozen_batch_size windows, no checkpoints: a
    resumed run repeats the phase). Returns its seconds.

    Why: the encoder reaches its precision before the predictor and heads reach theirs, and a
    cached-latent step costs a few milliseconds against a learned-encoder step's hundreds
    (measured in docs/world_model_encoders.md)."""
    # predictor and heads start afresh: the first phase's adapted to an encoder that moved
    torch.manual_seed(cfg.seed + 1)
    fresh = WorldModel(cfg, model.env).to(accelerator.device).state_dict()
    encoder = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    model.load_state_dict({**fresh, **encoder})
    phase = dataclasses.replace(
        cfg, steps=cfg.frozen_steps, batch_size=cfg.frozen_batch_size, checkpoint_every=0
    )
    optimizer = _frozen_encoder_optimizer(model, cfg)
    gen = seeding.generator("wm-frozen-batches", cfg.seed)
    loop = dict(store=store, train_ids=train_ids, optimizer=optimizer, gen=gen, history=history)
    return _cached_loop(accelerator, model, out, progress, phase, 0, **loop, step_offset=cfg.steps)


@torch.no_grad()
def state_readout(
    model: WorldModel, store: RolloutStore, train_ids, holdout_ids, device, max_rows: int = 4000
) -> dict[str, float]:
    """A diagnostic that training and planning never see: a linear (ridge) readout of the
    simulator's state from the latents' observation part, fitted on training episodes and scored
    on held-out ones. Reports R^2 and RMSE per state component (`readout_r2_<i>`,
    `readout_rmse_<i>`), and for CartPole (x, v, theta, omega) theta's RMSE where |x| < 0.3 and
    where |x| > 0.6."""
    model.eval()

    def latents(ids, limit):
        rows = store.episode_indices(torch.as_tensor(ids))
        rows = rows[torch.linspace(0, len(rows) - 1, min(limit, len(rows))).long()]
        data = store.data[rows]
        prev = store.data["action"][(rows - 1).clamp(min=0)]
        z = torch.cat(
            [
                model.observation_part(
                    model.encode(
                        data["pixels"][i : i + 512].to(device),
                        prev[i : i + 512].to(device),
                        data["step"][i : i + 512].to(device) > 0,
                    )
                ).cpu()
                for i in range(0, len(rows), 512)
            ]
        )
        return z.double(), data["observation"].double()

    z_train, s_train = latents(train_ids, max_rows)
    z_hold, s_hold = latents(holdout_ids, max_rows)
    mean, std = z_train.mean(0), z_train.std(0).clamp_min(1e-6)
    design = lambda z: torch.cat([(z - mean) / std, torch.ones(len(z), 1, dtype=z.dtype)], 1)  # noqa: E731
    x_train = design(z_train)
    ridge = 1e-3 * len(x_train) * torch.eye(x_train.shape[1], dtype=x_train.dtype)
    w = torch.linalg.solve(x_train.T @ x_train + ridge, x_train.T @ s_train)
    err = design(z_hold) @ w - s_hold  # (M, O)
    out = {}
    for i in range(s_hold.shape[1]):
        mse = float(err[:, i].pow(2).mean())
        out[f"readout_rmse_{i}"] = mse**0.5
        out[f"readout_r2_{i}"] = 1.0 - mse / max(float(s_hold[:, i].var()), 1e-12)
    if store.meta["env_id"].split("/")[-1].startswith(("CartPole", "NoisyCartPole")):
        x = s_hold[:, 0].abs()
        for name, sel in (("near", x < 0.3), ("far", x > 0.6)):
            if sel.any():
                out[f"readout_theta_rmse_{name}"] = float(err[sel, 2].pow(2).mean().sqrt())
    model.train()
    return out
