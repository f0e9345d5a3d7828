"""Training the action-conditioned world model on a rollout store, and measuring it on held-out episodes.

Pixels: the student encoder and the predictor learn together; targets are the layer-normed latents
of an EMA copy of the encoder (the lagging teacher keeps the latents from collapsing), as in
V-JEPA 2-AC's teacher forcing plus multi-step rollout losses. States: the latent is the
normalised state, so only the predictor and heads learn.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vjepa_agent import checkpoint as ckpt
from vjepa_agent import seeding
from vjepa_agent.config import WorldModelConfig, save_yaml
from vjepa_agent.data.rollouts import RolloutStore
from vjepa_agent.errors import require
from vjepa_agent.jepa import ema_update_
from vjepa_agent.metrics import effective_rank
from vjepa_agent.schedules import lr_at
from vjepa_agent.world_model import WorldModel

log = logging.getLogger("vjepa_agent.world_model")


def env_spec_from_store(store: RolloutStore) -> dict[str, Any]:
    """What the world model must know about the env: id, obs mode, shapes, action space."""
    meta, data = store.meta, store._chunks[0]
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


def world_model_losses(
    model: WorldModel, target_encoder: torch.nn.Module, batch, cfg: WorldModelConfig
) -> dict[str, torch.Tensor]:
    """Teacher forcing + multi-step rollout + heads, on a (B, T) batch of transitions."""
    key = _obs_key(model)
    actions = batch["action"]
    # 1. latents: student on observations, EMA teacher (no grad) on next observations
    z = model.encode(batch[key])  # (B, T, *latent)
    with torch.no_grad():
        nxt = batch["next", key]
        target = target_encoder(nxt.reshape(-1, *nxt.shape[2:])).reshape(z.shape)  # (B, T, *latent)
    # 2. teacher forcing: predict z_{t+1} from z_{<=t}, a_{<=t}
    pred = model.predict_sequence(z, actions)
    loss_tf = F.l1_loss(pred, target)
    # 3. rollout: from z_0, feed predictions back for K steps
    k = cfg.rollout_steps
    roll = model.rollout(z[:, 0], actions[:, :k])  # (B, K, *latent)
    loss_ro = F.l1_loss(roll, target[:, :k])
    # 4. heads on predicted and on encoded next latents
    term = batch["next", "terminated"].float()[..., 0]  # (B, T)
    reward = batch["next", "reward"].float()[..., 0]
    pos_weight = torch.tensor(10.0, device=term.device)
    loss_term = 0.5 * (
        F.binary_cross_entropy_with_logits(model.termination_logits(pred), term, pos_weight=pos_weight)
        + F.binary_cross_entropy_with_logits(model.termination_logits(target), term, pos_weight=pos_weight)
    )
    loss_rew = 0.5 * (F.mse_loss(model.reward(pred), reward) + F.mse_loss(model.reward(target), reward))
    total = loss_tf + cfg.rollout_weight * loss_ro + cfg.termination_weight * loss_term + cfg.reward_weight * loss_rew
    # 5. pixels: keep the latent informative (inverse dynamics on consecutive student latents, batch variance)
    loss_inv = loss_var = torch.zeros((), device=z.device)
    if model.env["obs"] == "pixels":
        logits = model.inverse_dynamics(z[:, :-1], z[:, 1:])  # (B, T-1, A)
        if model.action_kind == "discrete":
            a = actions[:, :-1].long() - int(model.env["action_space"].get("start", 0))
            loss_inv = F.cross_entropy(logits.flatten(0, 1), a.flatten())
        else:
            loss_inv = F.mse_loss(logits, model.action_features(actions[:, :-1]))
        flat = z.reshape(-1, z.shape[-1])
        loss_var = F.relu(1.0 - flat.std(dim=0)).mean()
        total = total + cfg.inverse_weight * loss_inv + cfg.variance_weight * loss_var
    return {
        "loss": total,
        "teacher_forcing": loss_tf.detach(),
        "rollout": loss_ro.detach(),
        "termination": loss_term.detach(),
        "reward": loss_rew.detach(),
        "inverse": loss_inv.detach(),
        "variance": loss_var.detach(),
        "latents": target.detach(),
    }


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
        z0 = model.encode(batch[key][:, 0])  # (B, *latent) student, as when planning
        first = target_encoder(batch[key][:, 0])
        nxt = batch["next", key]
        target = target_encoder(nxt.reshape(-1, *nxt.shape[2:])).reshape(nxt.shape[0], horizon, *z0.shape[1:])
        traj = model.rollout(z0, batch["action"])
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
    scores_enc, scores_pred, labels = [], [], []
    for i in range(0, len(rows), 512):
        td = store.data[rows[i : i + 512]].to(device)
        nxt = target_encoder(td["next", key])
        scores_enc.append(model.termination(nxt).cpu())
        pred = model.predict(model.encode(td[key]), td["action"])
        scores_pred.append(model.termination(pred).cpu())
        labels.append(td["next", "terminated"][..., 0].cpu())
    labels = torch.cat(labels)
    out["termination_auc"] = roc_auc(torch.cat(scores_enc), labels)
    out["termination_auc_predicted"] = roc_auc(torch.cat(scores_pred), labels)
    out["holdout_transitions"] = int(len(rows))
    model.train()
    return out


def train_world_model(cfg: WorldModelConfig, progress: bool = True) -> tuple[WorldModel, dict[str, Any]]:
    """Train on cfg.data, evaluate on held-out episodes, save into cfg.out; returns (model, summary)."""
    cfg.validate()
    store = RolloutStore.open(cfg.data)
    spec = env_spec_from_store(store)
    train_ids, holdout_ids = store.split_episodes(cfg.holdout, seed=cfg.seed)
    require(len(train_ids) > 0 and len(holdout_ids) > 0, f"rollout store '{cfg.data}' has too few episodes to hold some out")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "train_config.yaml")

    # 1. model; the state encoder's normalisation comes from the training data
    torch.manual_seed(cfg.seed)
    model = WorldModel(cfg, spec)
    if spec["obs"] == "state":
        model.encoder.fit(store.data["observation"][store.episode_indices(torch.as_tensor(train_ids))])
    elif cfg.encoder_init:
        encoder, _ = ckpt.load_encoder(cfg.encoder_init)
        model.encoder.vit.load_state_dict(encoder.state_dict())
    model.to(device).train()
    target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = seeding.generator("wm-batches", cfg.seed)

    # 2. the loop
    history, start = [], time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="world model", disable=not progress, dynamic_ncols=True)
    for step in bar:
        lr = lr_at(step, total=cfg.steps, warmup=max(1, cfg.steps // 20), start_lr=cfg.lr / 10, lr=cfg.lr, final_lr=cfg.lr / 20)
        for g in optimizer.param_groups:
            g["lr"] = lr
        batch = store.sample_sequences(cfg.batch_size, cfg.seq_len, gen, episodes=train_ids).to(device)
        losses = world_model_losses(model, target_encoder, batch, cfg)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if spec["obs"] == "pixels":
            ema_update_(target_encoder, model.encoder, cfg.ema)
        else:
            target_encoder.load_state_dict(model.encoder.state_dict())
        loss_value = float(losses["loss"].detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"world-model loss is {loss_value} at step {step}; lower --lr")
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {k: float(v.detach()) for k, v in losses.items() if k != "latents"}
            row["step"], row["lr"] = step + 1, lr
            row["effective_rank"] = effective_rank(losses["latents"])
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", tf=f"{row['teacher_forcing']:.4f}")
    train_seconds = time.perf_counter() - start

    # 3. held-out evaluation, save
    metrics = evaluate(model, target_encoder, store, holdout_ids, cfg, device)
    summary = {
        **metrics,
        "env_id": spec["env_id"],
        "obs": spec["obs"],
        "env_steps": len(store),
        "train_episodes": len(train_ids),
        "holdout_episodes": len(holdout_ids),
        "steps": cfg.steps,
        "train_seconds": train_seconds,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "effective_rank": history[-1]["effective_rank"] if history else float("nan"),
    }
    model.eval()
    model.save_pretrained(out, extra={"summary": summary})
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    ckpt.write_json(summary, out / "summary.json")
    return model.cpu(), summary
