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
from vjepa_agent.errors import require
from vjepa_agent.jepa import ema_update_
from vjepa_agent.metrics import effective_rank
from vjepa_agent.schedules import lr_at
from vjepa_agent.threads import torch_threads
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
        spec["render_scale"] = meta.get("render_scale") or 1  # stores from before render scales: 1
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


def encode_batch(
    model: WorldModel, target_encoder: torch.nn.Module, batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student latents of the observations and (no grad) target latents of the next ones, (B, T, *latent)."""
    key = _obs_key(model)
    z = model.encode(batch[key], batch["prev_action"], batch["step"] > 0)
    with torch.no_grad():
        target = target_latents(model, target_encoder, batch["next", key], batch["action"])
    return z, target


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
    # 5. learned pixel latents: keep them informative (inverse dynamics on consecutive latents, batch variance)
    loss_inv = loss_var = torch.zeros((), device=z.device)
    if z.requires_grad:
        obs_z = model.observation_part(z)  # the previous-action features would give it away
        logits = model.inverse_dynamics(obs_z[:, :-1], obs_z[:, 1:])  # (B, T-1, A)
        if model.action_kind == "discrete":
            a = actions[:, :-1].long() - int(model.env["action_space"].get("start", 0))
            loss_inv = F.cross_entropy(logits.flatten(0, 1), a.flatten())
        else:
            loss_inv = F.mse_loss(logits, model.action_features(actions[:, :-1]))
        flat = obs_z.reshape(-1, obs_z.shape[-1])
        loss_var = F.relu(1.0 - flat.std(dim=0)).mean()
        total = total + cfg.inverse_weight * loss_inv + cfg.variance_weight * loss_var
    return {
        "loss": total,
        "teacher_forcing": loss_tf.detach(),
        "rollout": loss_ro.detach(),
        "termination": loss_term.detach(),
        "reward": loss_rew.detach(),
        "failure": loss_fail.detach(),
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
def cache_latents(
    model: WorldModel, store: RolloutStore, device, batch: int = 512, features: bool = False
) -> TensorDict:
    """Encode every transition once (frozen encoder): (N,) TensorDict with "latent", ("next", "latent"),
    "action", ("next", "reward"), ("next", "terminated"), rows in the order of store.data.

    Within an episode the next observation of row i is the observation of row i + 1, so only the
    last transition of each episode has its next observation encoded separately. With `features`
    (a learned projection), the "latents" are `model.encode_features`, before the projection.
    """
    key = _obs_key(model)
    encode = model.encode_features if features else model.encode
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
    require(
        int(os.environ.get("WORLD_SIZE", "1")) == 1,
        "train_world_model.py trains in one process (small models, cached latents); launch it with "
        "--num_processes 1 or plain python",
    )
    store = RolloutStore.open(cfg.data)
    spec = env_spec_from_store(store)
    train_ids, holdout_ids = store.split_episodes(cfg.holdout, seed=cfg.seed)
    require(
        len(train_ids) > 0 and len(holdout_ids) > 0,
        f"rollout store '{cfg.data}' has too few episodes to hold some out",
    )
    device = Accelerator().device  # Accelerate owns devices; this loop is single-process
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "train_config.yaml")

    # 1. model; the state encoder's normalisation (or the pixel encoder's PCA) comes from the training data
    torch.manual_seed(cfg.seed)
    model = WorldModel(cfg, spec)
    train_rows = store.episode_indices(torch.as_tensor(train_ids))
    moments = spec["obs"] == "pixels" and cfg.pixel_encoder == "moments"
    frozen = spec["obs"] == "state" or cfg.encoder_mode == "frozen" or moments
    if spec["obs"] == "state":
        model.encoder.fit(store.data["observation"][train_rows])
    elif moments:
        found = model.encoder.fit(_sample_frames(store, train_rows, 4096, "moments", cfg.seed))
        log.info("object moments: background %s, ink directions %s", *found.values())
    else:
        if cfg.encoder_init:
            encoder, _ = ckpt.load_encoder(cfg.encoder_init)
            model.encoder.vit.load_state_dict(encoder.state_dict())
        if frozen and cfg.latent == "compact":
            frames = _sample_frames(store, train_rows, 2048, "pca", cfg.seed)
            explained = model.encoder.fit_pca(frames)
            log.info(
                "PCA of frozen encoder tokens: %d components explain %.1f%% of the variance",
                cfg.latent_dim,
                100 * explained,
            )
    model.to(device).train()
    learned = model.learned_projection  # frozen tokens, learned projection: an EMA target for it
    if frozen:
        model.encoder.requires_grad_(False)
        target_encoder = model.encoder
        # every transition encoded once (with a learned projection: its input features)
        cache = cache_latents(model, store, device, features=learned)
        cache["steps_to_termination"] = store.steps_to_termination().to(device)
        if learned:
            model.encoder.proj.requires_grad_(True)
            target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
    else:
        target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = seeding.generator("wm-batches", cfg.seed)
    episodes = [e for e in store.episodes() if e.id in set(train_ids.tolist())]

    # 2. the loop
    # Cached latents on CPU: a step is a few small matmuls, which a second thread only slows down,
    # badly beside another busy process (state model, 300 steps next to a one-thread job: 3.6 s
    # with one thread, 151 s with two); a learned encoder keeps the threads.
    with torch_threads(1 if frozen and device.type == "cpu" else None):
        history, start = [], time.perf_counter()
        bar = tqdm(range(cfg.steps), desc="world model", disable=not progress, dynamic_ncols=True)
        for step in bar:
            lr = lr_at(
                step,
                total=cfg.steps,
                warmup=max(1, cfg.steps // 20),
                start_lr=cfg.lr / 10,
                lr=cfg.lr,
                final_lr=cfg.lr / 20,
            )
            for g in optimizer.param_groups:
                g["lr"] = lr
            if frozen:
                batch = cache[sample_windows(episodes, cfg.batch_size, cfg.seq_len, gen)].to(device)
                z, target = batch["latent"], batch["next", "latent"]
                pick = torch.randint(
                    len(train_rows), (cfg.batch_size * cfg.seq_len,), generator=gen
                )
                head_rows = cache[train_rows[pick]].to(device)
                if learned:  # student latents, EMA-projected targets
                    z = model.project(z)
                    with torch.no_grad():
                        target = model.project(target, target_encoder)
                        head_rows["next", "latent"] = model.project(
                            head_rows["next", "latent"], target_encoder
                        )
            else:
                batch = store.sample_sequences(
                    cfg.batch_size, cfg.seq_len, gen, episodes=train_ids
                ).to(device)
                z, target = encode_batch(model, target_encoder, batch)
                head_rows = None
            losses = world_model_losses(model, z, target, batch, cfg, head_rows)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if learned:  # the ViT and the PCA are frozen: only the projection moves
                ema_update_(target_encoder.proj, model.encoder.proj, cfg.ema)
            elif not frozen:
                ema_update_(target_encoder, model.encoder, cfg.ema)
            loss_value = float(losses["loss"].detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"world-model loss is {loss_value} at step {step}; lower --lr"
                )
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
