"""What `scripts/plan.py` runs: check inputs, get a world model (load, or collect + train + cache),
plan in real environments with the MPC agent, and report (summary.json, mp4, plot).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from vjepa_agent import envs, planning
from vjepa_agent.agent import LatentObjective, MPCAgent
from vjepa_agent.config import CollectConfig, PlanConfig, PlannerConfig, WorldModelConfig
from vjepa_agent.errors import require, require_extra
from vjepa_agent.threads import torch_threads
from vjepa_agent.train.tracking import check_tracker
from vjepa_agent.world_model import WorldModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Per-env defaults; every entry can be overridden by a flag. `goal_state` is a state whose rendering
# is the default goal (CartPole: the pole upright over the centre), planned toward with goal_weight.
_CARTPOLE = dict(
    goal_state=[0.0, 0.0, 0.0, 0.0],
    # state mode: weigh cart position and pole angle (rad) only; penalising velocities makes
    # the planner let the cart drift (measured with the true physics: 500/500 vs ~150 steps)
    goal_state_weights=[1.0, 0.0, 100.0, 0.0],
    # pixels: the goal image's latent distance is dominated by the cart (a big block), not the
    # pole; the termination head's logits rank states by distance to failure instead
    goal_weight={"pixels": 0.0, "state": 1.0},
    termination_penalty={"pixels": 0.0, "state": 20.0},
    termination_logit_weight={"pixels": 1.0, "state": 0.0},
    reward_weight={"pixels": 0.0, "state": 1.0},
    # pixels: object moments (translation-equivariant: the pole is read wherever the cart
    # is) on random-policy data whose episodes start anywhere in +-1.5 m, 10k steps, an
    # 8-step rollout loss: 476.4 / 500 / 500 / 478.6 for seeds 0-3
    # (docs/experiments.md: "What planning reaches")
    pixel_encoder={"pixels": "moments", "state": "vit"},
    exploring_starts={"pixels": True, "state": False},
    collect_steps={"pixels": 10000, "state": 5000},
    train_steps={"pixels": 3000, "state": 800},
    rollout_steps={"pixels": 8, "state": 4},
    # learned pixel encoders see the band where the cart and pole move at 16 x 256, grey: the
    # pole is ~4 px wide (1 px at 64 x 64) and its tip moves +-11 px over the angles CartPole
    # allows, more than a patch, for the same number of pixels as 64 x 64 (a random ViT's
    # pooled latent reads the angle with R^2 0.65 at 16 x 256, 0.50 at 32 x 128)
    learned_frames={"pixels": dict(size=(16, 256), grayscale=True), "state": {}},
    # learned encoders: the failure head's gradient is the one that needs the pole (from the
    # true state an MLP predicts its target to 0.44 smooth-L1 with angle and angular velocity
    # alone, 1.16 with the cart position alone), so it weighs 10x the state models'
    learned_world_model={
        "pixels": dict(
            failure_weight=5.0,
            termination_weight=1.0,
            batch_size=16,
            # jepa: the temporal contrast in place of VICReg reads the pole best (linear R^2 0.94
            # against 0.74 on the same data and steps); reconstruction ignores these three
            contrast_weight=5.0,
            variance_weight=0.0,
            covariance_weight=0.0,
            # the encoder reaches its precision in ~1800 steps, the predictor and heads need
            # more: 3000 cheap steps on the frozen encoder's cached latents, a wider predictor
            frozen_steps=3000,
            predictor_dim=128,
            # the frozen phase and every round's: one compilation, then about half the step
            compile="on",
        ),
        "state": {},
    },
    # learned encoders: 20k steps of whole-state exploring starts (their latent misreads the
    # pole in closed loop when the starts spread the cart's position alone) and 1800 steps
    # of the encoder before the frozen phase (docs/world_model_encoders.md)
    learned_collect_steps={"pixels": 20000, "state": None},
    # then rounds of 10k on-policy steps, each with a new predictor and heads on all the data
    # (seeds 0 / 1: 85.1 / 54.9 -> 119.3 / 133.9 -> 195.3 / 233.0; docs/world_model_encoders.md)
    rounds={"pixels": 2, "state": 0},
    learned_train_steps={"pixels": 1800, "state": None},
    # one wide iteration: a decision's time is the predictor's per-step calls (docs/experiments.md)
    samples=128,
    iterations=1,
)
ENV_PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": _CARTPOLE,
    envs.NOISY_CARTPOLE_ID: _CARTPOLE,
    "Pendulum-v1": dict(
        collect_steps={"pixels": 20000, "state": 10000}, train_steps={"pixels": 2000, "state": 1500}
    ),
    "Acrobot-v1": dict(
        collect_steps={"pixels": 20000, "state": 10000}, train_steps={"pixels": 2000, "state": 1500}
    ),
    envs.POINT_GOAL_ID: dict(
        goal_weight=1.0,
        termination_penalty=0.0,
        collect_steps={"pixels": 10000, "state": 5000},
        train_steps={"pixels": 1500, "state": 800},
    ),
}
DEFAULTS = dict(
    goal_weight=0.0,
    termination_penalty=0.0,
    termination_logit_weight=0.0,
    failure_logit_weight=0.0,
    reward_weight=1.0,
    collect_steps={"pixels": 20000, "state": 10000},
    train_steps={"pixels": 2000, "state": 1000},
    frame_stack=CollectConfig.frame_stack,  # one default for collect_rollouts and plan.py
    pixel_encoder="vit",
    exploring_starts=False,
    rollout_steps=WorldModelConfig.rollout_steps,
    learned_frames={"pixels": dict(size=64, grayscale=False), "state": {}},
    learned_world_model={"pixels": {}, "state": {}},
    rounds=0,
    samples=64,
    elites=8,
    iterations=3,
)
PRESET_PLANNER_FIELDS = ("samples", "elites", "iterations")
ROUND_SEED_OFFSET = 1000  # on-policy round k collects with seeds seed + k * 1000 + i, i < 8
EVAL_SEED_OFFSET = (
    100_000  # evaluation resets never reuse a collection seed (those are seed + i, i < num_envs)
)


def preset(cfg: PlanConfig, key: str):
    value = getattr(cfg, key, None)
    if value is not None:
        return value
    value = ENV_PRESETS.get(cfg.env, {}).get(key, DEFAULTS.get(key))
    return value[cfg.obs] if isinstance(value, dict) else value


LEARNED_ENCODERS = ("jepa", "reconstruction")


def learned(cfg: PlanConfig) -> bool:
    """Whether plan.py trains a learned pixel encoder (jepa, reconstruction)."""
    return cfg.obs == "pixels" and preset(cfg, "pixel_encoder") in LEARNED_ENCODERS


def steps_preset(cfg: PlanConfig, key: str) -> int:
    """collect_steps / train_steps: the flag, else the env's learned_<key> for a learned encoder
    (where it has one), else its <key>."""
    if getattr(cfg, key) is None and learned(cfg):
        value = preset(cfg, f"learned_{key}")
        if value is not None:
            return value
    return preset(cfg, key)


def frame_format(cfg: PlanConfig) -> dict[str, Any]:
    """Frame size and colour of the data and env: learned encoders take the env preset's
    `learned_frames`, the others 64 x 64 RGB (the moments unmix colours)."""
    if learned(cfg):
        return dict(preset(cfg, "learned_frames"))
    return dict(size=64, grayscale=False)


def start_spread(cfg: PlanConfig) -> str:
    """Which state components exploring starts spread: --start-spread, else the whole state for
    the learned encoders (their latent misreads the pole in closed loop otherwise; measured in
    docs/world_model_encoders.md) and the position for the others (the moments' preset)."""
    if cfg.start_spread is not None:
        return cfg.start_spread
    return "state" if learned(cfg) else "position"


# ---------------------------------------------------------------------------- checks


def check_inputs(cfg: PlanConfig) -> gym.Env:
    """All the one-line errors, before any training: env, obs mode, planner, goal, model."""
    envs.pixels.check_env_id(cfg.env)
    require(
        0 <= cfg.sticky_actions < 1, f"sticky_actions must be in [0, 1), got {cfg.sticky_actions}"
    )
    kwargs = {}
    if cfg.obs == "state" and "rgb_array" in _render_modes(cfg.env):
        kwargs["render_mode"] = "rgb_array"  # for the episode video only
    if cfg.obs == "pixels":
        kwargs.update(pixel_options(cfg))
    env = envs.make_env(
        cfg.env, obs=cfg.obs, seed=cfg.seed, **kwargs
    )  # unknown id / no rgb_array -> UserError
    planning.action_space_kind(env.action_space, cfg.env)  # an action space we cannot plan over
    if cfg.planner != "auto":
        planning.check_planner_fits(cfg.planner, env.action_space, cfg.env)
    if cfg.goal:
        require(
            hasattr(env.unwrapped, "goal_image"),
            f"--goal needs an env with a goal image, and {cfg.env} has none; try --env {envs.POINT_GOAL_ID}",
        )
    require(cfg.episodes >= 1, f"episodes must be >= 1, got {cfg.episodes}")
    if preset(cfg, "exploring_starts"):
        envs.starts.default_start_ranges(cfg.env, start_spread(cfg))
    if cfg.obs == "state":
        require(
            cfg.pixel_encoder in (None, "vit"),
            f"--pixel-encoder {cfg.pixel_encoder} encodes pixels, and --obs state has none; drop "
            "the flag or pass --obs pixels",
        )
    if cfg.model is None:
        check_tracker(cfg.tracker, "world-model training")
    if cfg.frozen_steps is not None:
        require(
            learned(cfg) and cfg.model is None,
            "--frozen-steps trains a learned encoder's predictor and heads (--pixel-encoder jepa "
            "or reconstruction, no --model); drop it",
        )
        require(cfg.frozen_steps >= 0, f"frozen_steps must be >= 0, got {cfg.frozen_steps}")
    require(cfg.round_steps >= 1, f"round_steps must be >= 1, got {cfg.round_steps}")
    if cfg.rounds is not None:
        require(cfg.rounds >= 0, f"rounds must be >= 0, got {cfg.rounds}")
        require(
            not cfg.rounds or (learned(cfg) and cfg.model is None),
            "--rounds collects on-policy data for a learned encoder's predictor and heads "
            "(--pixel-encoder jepa or reconstruction, no --model); drop it",
        )
    if rounds(cfg) and cfg.model is None:
        require(
            learned_options(cfg).get("frozen_steps", 0) > 0,
            "on-policy rounds train the predictor and heads on the frozen encoder: give "
            "--frozen-steps > 0, or --rounds 0",
        )
    if cfg.model is not None:
        meta_path = Path(cfg.model) / "config.json"
        require(
            meta_path.is_file(), f"--model '{cfg.model}' holds no world model (config.json missing)"
        )
        meta = json.loads(meta_path.read_text())
        trained = meta.get("env", {})
        kind = meta.get("config", {}).get("pixel_encoder", "vit")
        require(
            cfg.pixel_encoder is None or cfg.obs == "state" or cfg.pixel_encoder == kind,
            f"--model '{cfg.model}' has a {kind} pixel encoder, not --pixel-encoder "
            f"{cfg.pixel_encoder}; drop the flag, or train a {cfg.pixel_encoder} model",
        )
        require(
            trained.get("env_id") == cfg.env and trained.get("obs") == cfg.obs,
            f"--model '{cfg.model}' was trained on {trained.get('env_id')} ({trained.get('obs')}) but you asked "
            f"for {cfg.env} ({cfg.obs}); pass a model trained on this env and observation mode",
        )
    return env


# ---------------------------------------------------------------------------- the model


def get_world_model(cfg: PlanConfig, out: Path, env: gym.Env) -> tuple[WorldModel, dict[str, Any]]:
    """Load --model, reuse out/model when it matches, or collect random-policy data and train one."""
    if cfg.model is not None:
        wm = WorldModel.from_pretrained(cfg.model)
        meta = json.loads((Path(cfg.model) / "config.json").read_text())
        return wm, {"reused": str(cfg.model), **meta.get("summary", {})}
    # out/data and out/model are reused only for the collection these flags ask for
    data = out / "data"
    steps = steps_preset(cfg, "collect_steps")
    collect_kwargs = pixel_options(cfg) if cfg.obs == "pixels" else {}
    if preset(cfg, "exploring_starts"):
        spread = start_spread(cfg)
        collect_kwargs["start_ranges"] = envs.starts.default_start_ranges(cfg.env, spread)
    if (data / "meta.json").is_file():
        check_reused_data(data, cfg, steps, collect_kwargs)
    cached = out / "model"
    if (cached / "config.json").is_file():
        meta = json.loads((cached / "config.json").read_text())
        same_frames = cfg.obs == "state" or (
            meta["env"].get("render_scale", 1) == 1
            and meta["env"].get("frame_stack") == preset(cfg, "frame_stack")
            and meta["config"].get("pixel_encoder", "vit") == preset(cfg, "pixel_encoder")
            and list(np.broadcast_to(meta["env"].get("size"), 2))
            == list(np.broadcast_to(frame_format(cfg)["size"], 2))
        )
        if meta["env"]["env_id"] == cfg.env and meta["env"]["obs"] == cfg.obs and same_frames:
            print(f"reusing the world model cached in {cached}")
            done = out / "rounds" / "rounds.json"  # the on-policy rounds that made it, if any
            return WorldModel.from_pretrained(cached), {
                "reused": str(cached),
                **meta.get("summary", {}),
                "rounds": json.loads(done.read_text()) if done.is_file() else [],
            }
    from vjepa_agent.train.world_model import train_world_model

    if not (data / "meta.json").is_file():
        print(f"collecting {steps} random-policy steps of {cfg.env} ({cfg.obs}) into {data}")
        envs.collect_rollouts(
            cfg.env,
            steps,
            out=data,
            obs=cfg.obs,
            num_envs=4,
            seed=cfg.seed,
            sticky_actions=cfg.sticky_actions,
            **collect_kwargs,
        )
    wm_cfg = WorldModelConfig(
        data=data,
        out=cached,
        seed=cfg.seed,
        steps=steps_preset(cfg, "train_steps"),
        pixel_encoder=preset(cfg, "pixel_encoder") if cfg.obs == "pixels" else "vit",
        rollout_steps=preset(cfg, "rollout_steps"),
        tracker=cfg.tracker,
        **(learned_options(cfg) if learned(cfg) else {}),
    )
    print(f"training the world model ({wm_cfg.steps} steps) into {wm_cfg.out}")
    wm, summary = train_world_model(wm_cfg)
    if rounds(cfg):
        return on_policy_rounds(cfg, env, wm.eval(), wm_cfg, summary)
    return wm.eval(), summary


def rounds(cfg: PlanConfig) -> int:
    """On-policy rounds: --rounds, else the env preset (learned encoders only)."""
    return preset(cfg, "rounds") if learned(cfg) else 0


def on_policy_rounds(
    cfg: PlanConfig, env: gym.Env, wm: WorldModel, wm_cfg: WorldModelConfig, summary: dict
) -> tuple[WorldModel, dict[str, Any]]:
    """Rounds of on-policy data (TD-MPC2, PLDM and Dreamer learn online; a random policy's data
    is thin where the agent goes). Round k: the MPC agent of the model so far collects
    cfg.round_steps steps from the env's own starts, appended to the run's data; the model folder
    moves to out/rounds/model-<k-1>; a new predictor and heads train on its frozen encoder over
    all the data (encoder_from, steps 0, the preset's frozen_steps) into the model folder."""
    from vjepa_agent.train.world_model import train_world_model

    out = Path(wm_cfg.out)
    history = []
    for k in range(1, rounds(cfg) + 1):
        print(f"on-policy round {k}: collecting {cfg.round_steps} steps with the planner")
        with torch_threads(1):
            agent = make_agent(cfg, wm, env)
            td = envs.collect_rollouts(
                cfg.env,
                cfg.round_steps,
                out=wm_cfg.data,
                obs=cfg.obs,
                num_envs=8,
                policy=agent,
                seed=cfg.seed + k * ROUND_SEED_OFFSET,
                **pixel_options(cfg),
            )
        ended = td["next", "done"].squeeze(-1)
        lengths = (td["step"][ended] + 1).float()  # episodes that ended within the round
        previous = out.parent / "rounds" / f"model-{k - 1}"
        previous.parent.mkdir(exist_ok=True)
        out.rename(previous)
        round_cfg = dataclasses.replace(wm_cfg, steps=0, encoder_from=str(previous))
        wm, summary = train_world_model(round_cfg)
        wm.eval()
        history.append(
            {
                "round": k,
                "steps": cfg.round_steps,
                "episodes_ended": int(ended.sum()),
                "mean_episode_length": float(lengths.mean()) if len(lengths) else None,
            }
        )
    (out.parent / "rounds" / "rounds.json").write_text(json.dumps(history, indent=2))
    return wm, {**summary, "rounds": history}


def learned_options(cfg: PlanConfig) -> dict[str, Any]:
    """WorldModelConfig options of a learned encoder: the env preset's, --frozen-steps over it."""
    options = dict(preset(cfg, "learned_world_model"))
    if cfg.frozen_steps is not None:
        options["frozen_steps"] = cfg.frozen_steps
    return options


def check_reused_data(data: Path, cfg: PlanConfig, steps: int, collect: dict[str, Any]) -> None:
    """out/data is reused only when it is the collection these flags ask for; else a one-line
    error (the store is left as it is)."""
    meta = json.loads((data / "meta.json").read_text())
    want = {
        "env_id": cfg.env,
        "obs": cfg.obs,
        "seed": cfg.seed,
        "start_ranges": {str(i): list(r) for i, r in (collect.get("start_ranges") or {}).items()},
        "sticky_actions": cfg.sticky_actions,
    }
    if cfg.obs == "pixels":
        want.update(
            frame_stack=collect["frame_stack"],
            size=list(np.broadcast_to(collect["size"], 2)),
            grayscale=bool(collect.get("grayscale", False)),
        )
    have = dict(meta, size=list(np.broadcast_to(meta.get("size") or 0, 2)))
    have.setdefault("sticky_actions", 0.0)  # stores written before it was recorded
    differ = [f"{k} {have.get(k)!r} (asked: {v!r})" for k, v in want.items() if have.get(k) != v]
    if meta.get("num_transitions", 0) < steps:
        differ.append(f"{meta.get('num_transitions', 0)} steps (asked: {steps})")
    require(
        not differ,
        f"'{data}' holds another collection: {'; '.join(differ)}; pass a fresh --out or remove "
        "that folder",
    )
    print(f"reusing the {meta['num_transitions']} steps collected in {data}")


def make_agent(cfg: PlanConfig, wm: WorldModel, env: gym.Env) -> MPCAgent:
    """The MPC agent with the objective of cfg and the env preset (goal, termination, rewards)."""
    objective = LatentObjective(
        goal=goal_latent(cfg, wm, env) if preset(cfg, "goal_weight") else None,
        goal_weight=preset(cfg, "goal_weight"),
        termination_penalty=preset(cfg, "termination_penalty"),
        termination_logit_weight=preset(cfg, "termination_logit_weight"),
        failure_logit_weight=preset(cfg, "failure_logit_weight"),
        reward_weight=preset(cfg, "reward_weight"),
    )
    require(
        wm.failure_head is not None or not objective.failure_logit_weight,
        "this world model has no failure head (trained by an older version or with failure_weight 0); "
        "retrain it, or pass --failure-logit-weight 0",
    )
    state_weights = ENV_PRESETS.get(cfg.env, {}).get("goal_state_weights")
    if cfg.obs == "state" and state_weights is not None and objective.goal is not None:
        # the state latent is (s - mean) / std: raw-unit weights become w * std^2
        objective.goal_dim_weights = torch.tensor(state_weights) * wm.encoder.std.cpu() ** 2
    return MPCAgent(
        wm, env.action_space, objective, planner_config(cfg), seed=cfg.seed, env_id=cfg.env
    )


def planner_config(cfg: PlanConfig) -> PlannerConfig:
    """The planner settings of cfg, with the env preset where a flag was not given."""
    return PlannerConfig(
        **{
            f.name: preset(cfg, f.name) if f.name in PRESET_PLANNER_FIELDS else getattr(cfg, f.name)
            for f in dataclasses.fields(PlannerConfig)
        }
    )


def goal_latent(cfg: PlanConfig, wm: WorldModel, env: gym.Env) -> torch.Tensor | None:
    """The latent to plan toward: the env's goal image (--goal) or the preset goal state, else None."""
    goal_state = ENV_PRESETS.get(cfg.env, {}).get("goal_state")
    if cfg.goal:
        obs, info = env.reset(seed=cfg.seed + EVAL_SEED_OFFSET)
        goal_obs = info.get("goal_pixels") if cfg.obs == "pixels" else env.unwrapped.goal
        return wm.encode(torch.as_tensor(np.asarray(goal_obs))[None])[0]
    if goal_state is None:
        return None
    if cfg.obs == "state":
        return wm.encode(torch.tensor(goal_state, dtype=torch.float32)[None])[0]
    # pixels: render the goal state as a (static) frame stack
    env.reset(seed=cfg.seed)
    env.unwrapped.state = np.array(goal_state, dtype=np.float64)
    frame = env.process_frame(env.unwrapped.render())  # (C, H, W)
    stack = np.stack([frame] * env.frame_stack, axis=1)  # (C, T, H, W)
    return wm.encode(torch.as_tensor(stack)[None])[0]


# ---------------------------------------------------------------------------- evaluation


def run_episode(
    agent: MPCAgent, wm: WorldModel, env: gym.Env, seed: int, record: bool, max_steps: int | None
):
    """One episode with the agent; returns (return, length, frames, one-step latent errors, success).

    With `record`, also keeps the rendered frames and, per step, the error between the model's
    one-step prediction and the encoding of the observation that followed (for the plot).
    """
    obs, _ = env.reset(seed=seed)
    agent.reset(1)
    total, steps, frames, errors, success = 0.0, 0, [], [], False
    encode = lambda o, a=None: wm.encode(torch.as_tensor(np.asarray(o))[None], a)  # noqa: E731
    z = encode(obs) if record else None
    while True:
        action = agent.act(obs[None])[0]
        if record and env.unwrapped.render_mode == "rgb_array":
            frames.append(env.unwrapped.render())
        obs, reward, terminated, truncated, info = env.step(action)
        success = success or bool(info.get("is_success", False))
        total += float(reward)
        steps += 1
        if record:
            with torch.no_grad():
                a = torch.as_tensor(np.asarray(action))[None]
                z_pred = wm.predict(z, a)
                z = encode(obs, a)
            errors.append(
                float((wm.observation_part(z_pred) - wm.observation_part(z)).abs().mean())
            )
        if terminated or truncated or (max_steps is not None and steps >= max_steps):
            break
    return total, steps, frames, errors, success


def random_baseline(
    env: gym.Env, episodes: int, seed: int, max_steps: int | None
) -> dict[str, float]:
    """Mean return and success rate of uniformly random actions on the evaluation seeds."""
    env.action_space.seed(seed)
    returns, successes = [], []
    for i in range(episodes):
        env.reset(seed=seed + EVAL_SEED_OFFSET + i)
        total, steps, success = 0.0, 0, False
        while True:
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            total, steps = total + float(reward), steps + 1
            success = success or bool(info.get("is_success", False))
            if terminated or truncated or (max_steps is not None and steps >= max_steps):
                break
        returns.append(total)
        successes.append(success)
    return {
        "random_mean_return": float(np.mean(returns)),
        "random_success_rate": float(np.mean(successes)),
    }


def run_plan(cfg: PlanConfig) -> dict[str, Any]:
    """The whole command: checks, model, evaluation episodes, report. Returns the summary."""
    require_extra("matplotlib", "viz", "the plan plots its returns (plan.png)")
    out = Path(cfg.out or f"runs/plan-{cfg.env.replace('/', '-')}-{cfg.obs}")
    env = check_inputs(cfg)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wm, train_summary = get_world_model(cfg, out, env)
    train_seconds = time.perf_counter() - t0
    with torch_threads(1):  # one decision is a few small matmuls: threads only add overhead
        agent = make_agent(cfg, wm, env)
        objective = agent.objective
        returns, lengths, successes, first_frames, first_errors = [], [], [], [], []
        bar = tqdm(range(cfg.episodes), desc="planning", dynamic_ncols=True)
        timing = []
        for i in bar:
            agent.reseed(cfg.seed + i)
            ret, length, frames, errors, success = run_episode(
                agent,
                wm,
                env,
                cfg.seed + EVAL_SEED_OFFSET + i,
                record=(i == 0 and cfg.video),
                max_steps=cfg.max_episode_steps,
            )
            returns.append(ret)
            lengths.append(length)
            successes.append(success)
            timing.append(agent.stats())
            if i == 0:
                first_frames, first_errors = frames, errors
            bar.set_postfix(ret=f"{ret:.1f}", mean=f"{np.mean(returns):.1f}")
    decisions = sum(t["decisions"] for t in timing)
    stats = {
        k: float(np.average([t[k] for t in timing], weights=[t["decisions"] for t in timing]))
        for k in timing[0]
        if k != "decisions"
    }
    summary = {
        "env": cfg.env,
        "obs": cfg.obs,
        "pixel_encoder": wm.cfg.pixel_encoder if cfg.obs == "pixels" else None,
        "mean_return": float(np.mean(returns)),
        "min_return": float(np.min(returns)),
        "returns": returns,
        "episode_lengths": lengths,
        "success_rate": float(np.mean(successes)),
        **random_baseline(env, cfg.episodes, cfg.seed, cfg.max_episode_steps),
        "episodes": cfg.episodes,
        "env_steps_trained": int(train_summary.get("env_steps", 0)),
        "train_seconds": train_seconds,
        "model_reused": "reused" in train_summary,
        "rounds": train_summary.get("rounds", []),
        "world_model": {k: v for k, v in train_summary.items() if isinstance(v, int | float | str)},
        **stats,
        "decisions_per_s": 1000.0 / stats["ms_per_action"],
        "total_decisions": decisions,
        "planner": {
            **dataclasses.asdict(agent.cfg),
            "resolved": agent.planner.name,
            "goal_weight": objective.goal_weight,
            "termination_penalty": objective.termination_penalty,
            "termination_logit_weight": objective.termination_logit_weight,
            "failure_logit_weight": objective.failure_logit_weight,
            "reward_weight": objective.reward_weight,
        },
    }
    if first_frames:
        write_video(
            first_frames, out / "episode.mp4", fps=int(env.metadata.get("render_fps") or 30)
        )
        summary["video"] = str(out / "episode.mp4")
    write_plot(returns, first_errors, out / "plan.png", cfg, summary["random_mean_return"])
    summary["plot"] = str(out / "plan.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    from vjepa_agent.data.video import write_mp4

    write_mp4(path, np.stack(frames), fps)


def write_plot(
    returns: list[float],
    errors: list[float],
    path: Path,
    cfg: PlanConfig,
    random_return: float | None = None,
) -> Figure:
    """plan.png: the return of each episode (whole-number episode ticks) beside the random
    policy's mean return (a dashed line, when given), and episode 1's one-step latent error.
    Returns the (closed) matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.bar(range(1, len(returns) + 1), returns, label="planner")
    if random_return is not None:
        ax1.axhline(random_return, color="0.3", linestyle="--", label="random policy (mean)")
        ax1.legend(loc="best", fontsize="small")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set(xlabel="episode", ylabel="return", title=f"{cfg.env} ({cfg.obs}): returns")
    ax2.plot(range(1, len(errors) + 1), errors)
    ax2.set(
        xlabel="step of episode 1",
        ylabel="|predicted - realised| latent (L1)",
        title="one-step latent error",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig


def pixel_options(cfg: PlanConfig) -> dict[str, Any]:
    """`make_env` / `collect_rollouts` pixel options: with --model, the frames exactly as that model
    saw them, else the env preset."""
    if cfg.model is None:
        return {"frame_stack": preset(cfg, "frame_stack"), **frame_format(cfg)}
    spec = _model_env(cfg.model)
    require(
        cfg.frame_stack is None or cfg.frame_stack == spec.get("frame_stack"),
        f"--model '{cfg.model}' was trained on stacks of {spec.get('frame_stack')} frames, not "
        f"--frame-stack {cfg.frame_stack}; drop the flag",
    )
    require(
        spec.get("render_scale", 1) == 1,
        f"--model '{cfg.model}' was trained on frames rendered at scale {spec.get('render_scale')}, "
        "which this version does not render; retrain it",
    )
    options: dict[str, Any] = {}
    for key in ("size", "frame_stack", "grayscale"):
        if spec.get(key) is not None:
            options[key] = spec[key]
    if spec.get("crop") is not None:
        options["crop"] = tuple(spec["crop"])
    return options


def _model_env(folder: Path | None) -> dict[str, Any]:
    """The env spec a world-model folder was trained on ({} if it has no readable config.json)."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("env", {})
    except (OSError, ValueError):
        return {}


def _render_modes(env_id: str) -> list[str]:
    """The render modes an env class declares (without making it)."""
    from gymnasium.envs.registration import load_env_creator

    creator = load_env_creator(gym.spec(env_id).entry_point)
    return list(getattr(creator, "metadata", {}).get("render_modes", []))
