"""Where a pixel world model loses the state: a diagnostic that uses the simulator's true state.

Pixel rollout stores keep the env's own state vector ("observation") beside the frames, so the
state an encoder's latent holds can be measured (never used for training or planning):

1. `fit_state_probe`: an MLP from latents (with their previous-action features) to the true
   state, trained on the store's training episodes; `probe_errors` gives its RMS error per state
   dimension on held-out episodes, on encoded latents and on latents the predictor imagined
   1 / 5 / 10 steps ahead from them (with the actions that were taken).
2. `action_effect`: what k steps of one constant action rather than another do to the state,
   in imagination (the probe read on the predictor's rollout from encoded latents) and in the
   simulator (from the same true states): a planner can only rank actions by effects its model
   imagines at about their true size and sign.
3. `closed_loop`: a *state* world model and its planner act on the state the probe reads from
   the pixel latents, in real episodes. Beside it, the same planner on the true state plus
   Gaussian noise of the held-out RMS (independent at each step). If the noisy-state run balances
   and the probe-read run does not, the latent's state is worse in closed loop than on the data:
   the errors are reported by bins of |state[0]| (CartPole: the cart's distance from the centre).
4. `latent_spectrum`: the principal directions of the latent's observation part, each one's share
   of the variance and of the predictor's one-step error, and how much of each the state
   explains on held-out episodes: linearly, as a cubic polynomial, and as a periodic function of
   state[0] (the best of a scan of periods). A latent whose largest directions are none of these
   spends the predictor's loss on something the planner does not need; on CartPole the periodic
   one finds features of where the cart falls on the patch grid.

`run_diagnose(DiagnoseConfig)` is the body of `vjepa-diagnose` (`scripts/diagnose_pixel_model.py`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vjepa_agent import seeding
from vjepa_agent.config import DiagnoseConfig, PlanConfig
from vjepa_agent.data.rollouts import RolloutStore
from vjepa_agent.errors import require
from vjepa_agent.world_model import WorldModel

POSITION_BINS = (0.0, 0.1, 0.3, 0.6, float("inf"))  # of |state[0]|


class StateProbe(nn.Module):
    """Latents (..., Z) -> the env's state (..., O), in the state's own units."""

    def __init__(self, latent_dim: int, state_dim: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 256),
            nn.GELU(),
            nn.Linear(256, 256),
            nn.GELU(),
            nn.Linear(256, state_dim),
        )
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z) * self.std + self.mean


def _latents(wm: WorldModel, store: RolloutStore) -> dict[str, torch.Tensor]:
    from vjepa_agent.train.world_model import cache_latents

    with torch.no_grad():
        cache = cache_latents(wm, store, "cpu")
    data = store.data
    return {
        "latent": cache["latent"].float(),
        "next_latent": cache["next", "latent"].float(),
        "action": cache["action"],
        "state": torch.as_tensor(data["observation"]).float(),
        "episode": torch.as_tensor(data["episode"]),
        "step": torch.as_tensor(data["step"]),
    }


def fit_state_probe(
    latents: torch.Tensor, states: torch.Tensor, steps: int, seed: int = 0
) -> StateProbe:
    """Regress states (M, O) on latents (M, Z) with an MLP (standardised targets, Adam, batch 256)."""
    mean, std = states.mean(0), states.std(0).clamp_min(1e-6)
    torch.manual_seed(seed)
    probe = StateProbe(latents.shape[1], states.shape[1], mean, std)
    opt = torch.optim.Adam(probe.net.parameters(), lr=1e-3)
    gen = seeding.generator("state-probe", seed)
    target = (states - mean) / std
    for _ in range(steps):
        i = torch.randint(0, len(latents), (256,), generator=gen)
        loss = (probe.net(latents[i]) - target[i]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe.requires_grad_(False).eval()


def _rms(err: torch.Tensor) -> list[float]:
    return err.pow(2).mean(0).sqrt().tolist()


def probe_errors(
    wm: WorldModel, probe: StateProbe, lat: dict[str, torch.Tensor], rows: torch.Tensor
) -> dict[str, list[float]]:
    """Held-out RMS error per state dimension: encoded latents, and imagined 1 / 5 / 10 steps ahead."""
    out = {"encoded": _rms(probe(lat["latent"][rows]) - lat["state"][rows])}
    ep, horizon = lat["episode"], 10
    ok = rows[rows + horizon < len(ep)]
    ok = ok[ep[ok + horizon] == ep[ok]]
    if len(ok):
        actions = torch.stack([lat["action"][ok + k] for k in range(horizon)], 1)
        with torch.no_grad():
            traj = wm.rollout(lat["latent"][ok], actions)  # (M, H, Z)
        for k in (1, 5, 10):
            out[f"imagined_{k}"] = _rms(probe(traj[:, k - 1]) - lat["state"][ok + k])
    return out


ACTION_EFFECT_STEPS = (2, 4, 8)


def action_effect(
    wm: WorldModel,
    obs_probe: StateProbe,
    lat: dict[str, torch.Tensor],
    rows: torch.Tensor,
    limit: int = 256,
) -> dict[str, Any] | None:
    """Discrete actions, envs whose `unwrapped.state` is the observation (CartPole): from up to
    `limit` held-out states, k steps of the last action minus k steps of the first, per state
    dimension, imagined (`obs_probe` on the rollout's observation part: a probe that also reads
    the previous-action features would turn the action itself into an effect) and true (the
    simulator from the same state); mean over states, and the fraction of states where the
    imagined sign is the true one. None where the env cannot be set to a state."""
    import gymnasium as gym

    space = wm.env["action_space"]
    if space.get("type") != "Discrete":
        return None
    env = gym.make(wm.env["env_id"]).unwrapped
    env.reset(seed=0)
    state_shape = np.shape(getattr(env, "state", None))
    if state_shape != tuple(lat["state"].shape[1:]):
        return None
    rows = rows[:limit]
    first, last = int(space.get("start", 0)), int(space.get("start", 0)) + int(space["n"]) - 1
    out: dict[str, Any] = {"actions": [first, last]}
    for k in ACTION_EFFECT_STEPS:
        with torch.no_grad():
            ends = [
                obs_probe(
                    wm.observation_part(
                        wm.rollout(lat["latent"][rows], torch.full((len(rows), k), a))[:, -1]
                    )
                )
                for a in (first, last)
            ]
        imagined = ends[1] - ends[0]  # (M, O)
        true = []
        with warnings.catch_warnings():  # the physics goes on past termination: that is wanted
            warnings.simplefilter("ignore", UserWarning)
            for state in lat["state"][rows].numpy():
                end = []
                for a in (first, last):
                    env.state = state.astype(np.float64).copy()
                    for _ in range(k):
                        env.step(a)
                    end.append(np.asarray(env.state, dtype=np.float32))
                true.append(end[1] - end[0])
        true = torch.as_tensor(np.array(true))
        out[f"imagined_{k}"] = imagined.mean(0).tolist()
        out[f"true_{k}"] = true.mean(0).tolist()
        out[f"sign_agreement_{k}"] = (imagined.sign() == true.sign()).float().mean(0).tolist()
    env.close()
    return out


SPECTRUM_DIRECTIONS = 16
PERIODS = tuple(0.02 * 1.05**i for i in range(60))  # 0.02 to ~0.37 in state[0]'s units


def _held_out_r2(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, held: torch.Tensor):
    """R^2 per column of y on the `held` rows of a least-squares fit of y on x (+ bias) on `train`."""
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.linalg.lstsq(x[train], y[train]).solution
    err = x[held] @ w - y[held]
    return 1.0 - err.pow(2).mean(0) / y[held].var(0).clamp_min(1e-12)


def periodic(x: torch.Tensor, period: float) -> torch.Tensor:
    """(M,) -> (M, 6): sin and cos of 2 pi k x / period, k = 1, 2, 3."""
    phase = 2 * torch.pi * x[:, None] / period
    return torch.cat([f(q * phase) for q in (1, 2, 3) for f in (torch.sin, torch.cos)], 1)


def best_period(y: torch.Tensor, x: torch.Tensor, train: torch.Tensor, held: torch.Tensor) -> float:
    """The period whose `periodic(x, period)` explains the columns of y best (mean held-out R^2):
    a scan of PERIODS, then a finer one (0.2 % steps) around the best."""
    score = lambda p: float(_held_out_r2(periodic(x, p), y, train, held).mean())  # noqa: E731
    _, period = max((score(p), p) for p in PERIODS)
    _, period = max((score(p), p) for p in (period * (1 + 0.002 * i) for i in range(-25, 26)))
    return period


def latent_spectrum(
    wm: WorldModel, lat: dict[str, torch.Tensor], train: torch.Tensor, held: torch.Tensor
) -> dict[str, Any]:
    """The top principal directions of the latent's observation part (fitted on `train` rows):
    `variance_share` of each; `prediction_share`, its part of the predictor's one-step squared
    error on `held` rows; held-out R^2 of each from the state (`r2_state_linear`), a cubic
    polynomial of it (`r2_state_cubic`) and sin / cos of 2 pi k state[0] / period, k = 1..3,
    at the period that explains the top five best (`best_period`; `r2_periodic`, `period`)."""
    z = wm.observation_part(lat["latent"]).double()
    mean = z[train].mean(0)
    _, sv, v = torch.linalg.svd(z[train] - mean, full_matrices=False)
    k = min(SPECTRUM_DIRECTIONS, len(sv))
    pcs = (z - mean) @ v[:k].T  # (M, k)
    variance = sv.pow(2)
    with torch.no_grad():
        pred = wm.observation_part(wm.predict(lat["latent"][held], lat["action"][held])).double()
    err = ((pred - wm.observation_part(lat["next_latent"][held]).double()) @ v.T).pow(2).mean(0)
    state = lat["state"].double()
    std = (state - state[train].mean(0)) / state[train].std(0).clamp_min(1e-9)
    cubic = [std] + [
        (std[:, i] * std[:, j] * (std[:, m] if m is not None else 1))[:, None]
        for i in range(std.shape[1])
        for j in range(i, std.shape[1])
        for m in [None, *range(j, std.shape[1])]
    ]
    period = best_period(pcs[:, :5], state[:, 0], train, held)
    rounded = lambda t: [round(float(x), 4) for x in t]  # noqa: E731
    return {
        "variance_share": rounded(variance[:k] / variance.sum()),
        "prediction_share": rounded(err[:k] / err.sum()),
        "r2_state_linear": rounded(_held_out_r2(state, pcs, train, held)),
        "r2_state_cubic": rounded(_held_out_r2(torch.cat(cubic, 1), pcs, train, held)),
        "r2_periodic": rounded(_held_out_r2(periodic(state[:, 0], period), pcs, train, held)),
        "period": round(period, 4),
    }


def closed_loop_setup(cfg: DiagnoseConfig, wm: WorldModel):
    """The state model's MPC agent and the pixel env the diagnosed model saw, built once."""
    from vjepa_agent import plan_run

    env_id = wm.env["env_id"]
    scfg = PlanConfig(env=env_id, obs="state", model=cfg.state_model, seed=cfg.seed)
    agent = plan_run.make_agent(
        scfg, WorldModel.from_pretrained(cfg.state_model), plan_run.check_inputs(scfg)
    )
    return agent, plan_run.check_inputs(PlanConfig(env=env_id, obs="pixels", model=cfg.model))


def closed_loop(
    cfg: DiagnoseConfig, wm: WorldModel, probe: StateProbe, setup, noise: list[float] | None
) -> dict[str, Any]:
    """The state model's planner (`setup` = `closed_loop_setup(...)`) acting on probe-read states
    (noise None) or on true states plus independent Gaussian noise of std `noise` per dimension;
    returns, RMS errors by |state[0]|."""
    from vjepa_agent.plan_run import EVAL_SEED_OFFSET

    agent, env = setup
    rng = np.random.default_rng(cfg.seed)
    returns, errors, states = [], [], []
    for i in range(cfg.episodes):
        agent.reseed(cfg.seed + i)
        obs, _ = env.reset(seed=cfg.seed + EVAL_SEED_OFFSET + i)
        prev, total, steps = None, 0.0, 0
        while True:
            true = np.asarray(env.unwrapped.state, dtype=np.float32)
            if noise is None:
                with torch.no_grad():
                    valid = torch.tensor([prev is not None])
                    z = wm.encode(torch.as_tensor(obs)[None], prev, valid)
                    estimate = probe(z)[0].numpy()
            else:
                estimate = true + rng.normal(size=true.shape).astype(np.float32) * np.asarray(noise)
            errors.append(estimate - true)
            states.append(true)
            action = agent.act(estimate[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            prev = torch.as_tensor(np.asarray(action))[None]
            total, steps = total + float(reward), steps + 1
            if (
                terminated
                or truncated
                or (cfg.max_episode_steps and steps >= cfg.max_episode_steps)
            ):
                break
        returns.append(total)
    err, pos = torch.as_tensor(np.array(errors)), torch.as_tensor(np.array(states))[:, 0].abs()
    by_position = []
    for lo, hi in zip(POSITION_BINS[:-1], POSITION_BINS[1:]):
        sel = (pos >= lo) & (pos < hi)
        if sel.any():
            by_position.append(
                {"from": lo, "to": hi, "steps": int(sel.sum()), "rms": _rms(err[sel])}
            )
    return {
        "mean_return": float(np.mean(returns)),
        "returns": returns,
        "rms": _rms(err),
        "rms_by_position": by_position,
    }


def run_diagnose(cfg: DiagnoseConfig) -> dict[str, Any]:
    wm = WorldModel.from_pretrained(cfg.model)
    require(wm.env["obs"] == "pixels", f"--model '{cfg.model}' is not a pixel world model")
    store = RolloutStore.open(cfg.data)
    require(
        store.meta["env_id"] == wm.env["env_id"],
        f"--data '{cfg.data}' holds {store.meta['env_id']} rollouts, the model is of {wm.env['env_id']}",
    )
    lat = _latents(wm, store)
    train_ids, holdout_ids = store.split_episodes(0.2, seed=cfg.seed)
    usable = lat["step"] > 0  # after a reset the stack shows no motion and no previous action
    train = store.episode_indices(torch.as_tensor(train_ids))
    held = store.episode_indices(torch.as_tensor(holdout_ids))
    train, held = train[usable[train]], held[usable[held]]
    probe = fit_state_probe(lat["latent"][train], lat["state"][train], cfg.probe_steps, cfg.seed)
    summary: dict[str, Any] = {"model": str(cfg.model), "data": str(cfg.data)}
    summary["probe_rms"] = probe_errors(wm, probe, lat, held)
    obs_probe = fit_state_probe(
        wm.observation_part(lat["latent"][train]), lat["state"][train], cfg.probe_steps, cfg.seed
    )
    summary["action_effect"] = action_effect(wm, obs_probe, lat, held)
    summary["latent_spectrum"] = latent_spectrum(wm, lat, train, held)
    if cfg.state_model is not None:
        setup = closed_loop_setup(cfg, wm)
        summary["closed_loop_probe"] = closed_loop(cfg, wm, probe, setup, None)
        noise = summary["probe_rms"]["encoded"]
        summary["closed_loop_noise"] = closed_loop(cfg, wm, probe, setup, noise)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
