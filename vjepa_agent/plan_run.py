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
from vjepa_agent.config import PlanConfig, PlannerConfig, Recipe
from vjepa_agent.errors import require, require_extra
from vjepa_agent.recipes import is_learned, resolve, run_folder, save_recipe
from vjepa_agent.threads import torch_threads
from vjepa_agent.train.tracking import check_tracker
from vjepa_agent.world_model import WorldModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ROUND_SEED_OFFSET = 1000  # on-policy round k collects with seeds seed + k * 1000 + i, i < 8
EVAL_SEED_OFFSET = (
    100_000  # evaluation resets never reuse a collection seed (those are seed + i, i < num_envs)
)


def start_ranges(recipe: Recipe) -> dict | None:
    """The exploring starts' ranges of the recipe's collection, or None without them."""
    c = recipe.collect
    return envs.starts.default_start_ranges(c.env, c.start_spread) if c.exploring_starts else None


# ---------------------------------------------------------------------------- checks


def check_inputs(cfg: PlanConfig) -> gym.Env:
    """All the one-line errors, before any training: recipe, env, obs mode, planner, goal, model."""
    envs.pixels.check_env_id(cfg.env)
    if cfg.obs == "state":
        require(
            cfg.pixel_encoder in (None, "vit"),
            f"--pixel-encoder {cfg.pixel_encoder} encodes pixels, and --obs state has none; drop "
            "the flag or pass --obs pixels",
        )
    recipe = resolve(cfg)  # unknown keys, values of the wrong type -> UserError
    sticky = recipe.collect.sticky_actions
    require(0 <= sticky < 1, f"sticky_actions must be in [0, 1), got {sticky}")
    kwargs = {}
    if cfg.obs == "state" and "rgb_array" in _render_modes(cfg.env):
        kwargs["render_mode"] = "rgb_array"  # for the episode video only
    if cfg.obs == "pixels":
        kwargs.update(pixel_options(cfg, recipe))
    env = envs.make_env(
        cfg.env, obs=cfg.obs, seed=cfg.seed, **kwargs
    )  # unknown id / no rgb_array -> UserError
    planning.action_space_kind(env.action_space, cfg.env)  # an action space we cannot plan over
    if recipe.planner.planner != "auto":
        planning.check_planner_fits(recipe.planner.planner, env.action_space, cfg.env)
    if cfg.goal:
        require(
            hasattr(env.unwrapped, "goal_image"),
            f"--goal needs an env with a goal image, and {cfg.env} has none; try --env {envs.POINT_GOAL_ID}",
        )
    require(cfg.episodes >= 1, f"episodes must be >= 1, got {cfg.episodes}")
    start_ranges(recipe)  # exploring starts on an env without ranges -> UserError
    if cfg.model is None:
        check_tracker(cfg.tracker, "world-model training")
    learned = is_learned(recipe) and cfg.model is None
    if cfg.frozen_steps is not None:
        require(
            learned,
            "--frozen-steps trains a learned encoder's predictor and heads (--pixel-encoder jepa "
            "or reconstruction, no --model); drop it",
        )
        require(cfg.frozen_steps >= 0, f"frozen_steps must be >= 0, got {cfg.frozen_steps}")
    require(recipe.round_steps >= 1, f"round_steps must be >= 1, got {recipe.round_steps}")
    require(recipe.rounds >= 0, f"rounds must be >= 0, got {recipe.rounds}")
    if cfg.rounds:
        require(
            learned,
            "--rounds collects on-policy data for a learned encoder's predictor and heads "
            "(--pixel-encoder jepa or reconstruction, no --model); drop it",
        )
    if learned and recipe.rounds:
        require(
            recipe.world_model.frozen_steps > 0,
            "on-policy rounds train the predictor and heads on the frozen encoder: give "
            "--frozen-steps > 0, or --rounds 0",
        )
    if cfg.model is None:
        recipe.world_model.validate()
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
    recipe = resolve(dataclasses.replace(cfg, out=out))
    # out/data and out/model are reused only for the collection the recipe asks for
    data, cached = recipe.world_model.data, recipe.world_model.out
    collect_kwargs = pixel_options(cfg, recipe) if cfg.obs == "pixels" else {}
    if start_ranges(recipe):
        collect_kwargs["start_ranges"] = start_ranges(recipe)
    if (data / "meta.json").is_file():
        check_reused_data(data, recipe, collect_kwargs)
    if (cached / "config.json").is_file():
        meta = json.loads((cached / "config.json").read_text())
        same_frames = cfg.obs == "state" or (
            meta["env"].get("render_scale", 1) == 1
            and meta["env"].get("frame_stack") == recipe.collect.frame_stack
            and meta["config"].get("pixel_encoder", "vit") == recipe.world_model.pixel_encoder
            and list(np.broadcast_to(meta["env"].get("size"), 2))
            == list(np.broadcast_to(recipe.collect.size, 2))
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
        c = recipe.collect
        print(f"collecting {c.steps} random-policy steps of {cfg.env} ({cfg.obs}) into {data}")
        envs.collect_rollouts(
            cfg.env,
            c.steps,
            out=data,
            obs=cfg.obs,
            num_envs=c.num_envs,
            seed=cfg.seed,
            sticky_actions=c.sticky_actions,
            video_dir=c.video_dir,
            **collect_kwargs,
        )
    wm_cfg = recipe.world_model
    print(f"training the world model ({wm_cfg.steps} steps) into {wm_cfg.out}")
    wm, summary = train_world_model(wm_cfg)
    if is_learned(recipe) and recipe.rounds:
        return on_policy_rounds(recipe, env, wm.eval(), summary)
    return wm.eval(), summary


def on_policy_rounds(
    recipe: Recipe, env: gym.Env, wm: WorldModel, summary: dict
) -> tuple[WorldModel, dict[str, Any]]:
    """Rounds of on-policy data (TD-MPC2, PLDM and Dreamer learn online; a random policy's data
    is thin where the agent goes). Round k: the MPC agent of the model so far collects
    recipe.round_steps steps from the env's own starts, appended to the run's data; the model
    folder moves to out/rounds/model-<k-1>; a new predictor and heads train on its frozen encoder
    over all the data (encoder_from, steps 0, the recipe's frozen_steps) into the model folder."""
    from vjepa_agent.train.world_model import train_world_model

    wm_cfg, c = recipe.world_model, recipe.collect
    out = Path(wm_cfg.out)
    history = []
    for k in range(1, recipe.rounds + 1):
        print(f"on-policy round {k}: collecting {recipe.round_steps} steps with the planner")
        with torch_threads(1):
            agent = agent_for(recipe, wm, env)
            td = envs.collect_rollouts(
                c.env,
                recipe.round_steps,
                out=wm_cfg.data,
                obs=c.obs,
                num_envs=8,
                policy=agent,
                seed=c.seed + k * ROUND_SEED_OFFSET,
                frame_stack=c.frame_stack,
                size=c.size,
                grayscale=c.grayscale,
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
                "steps": recipe.round_steps,
                "episodes_ended": int(ended.sum()),
                "mean_episode_length": float(lengths.mean()) if len(lengths) else None,
            }
        )
    (out.parent / "rounds" / "rounds.json").write_text(json.dumps(history, indent=2))
    return wm, {**summary, "rounds": history}


def check_reused_data(data: Path, recipe: Recipe, collect: dict[str, Any]) -> None:
    """out/data is reused only when it is the collection the recipe asks for; else a one-line
    error (the store is left as it is)."""
    meta = json.loads((data / "meta.json").read_text())
    c = recipe.collect
    want = {
        "env_id": c.env,
        "obs": c.obs,
        "seed": c.seed,
        "start_ranges": {str(i): list(r) for i, r in (collect.get("start_ranges") or {}).items()},
        "sticky_actions": c.sticky_actions,
    }
    if c.obs == "pixels":
        want.update(
            frame_stack=collect["frame_stack"],
            size=list(np.broadcast_to(collect["size"], 2)),
            grayscale=bool(collect.get("grayscale", False)),
        )
    have = dict(meta, size=list(np.broadcast_to(meta.get("size") or 0, 2)))
    have.setdefault("sticky_actions", 0.0)  # stores written before it was recorded
    differ = [f"{k} {have.get(k)!r} (asked: {v!r})" for k, v in want.items() if have.get(k) != v]
    if meta.get("num_transitions", 0) < c.steps:
        differ.append(f"{meta.get('num_transitions', 0)} steps (asked: {c.steps})")
    require(
        not differ,
        f"'{data}' holds another collection: {'; '.join(differ)}; pass a fresh --out or remove "
        "that folder",
    )
    print(f"reusing the {meta['num_transitions']} steps collected in {data}")


def make_agent(cfg: PlanConfig, wm: WorldModel, env: gym.Env) -> MPCAgent:
    """The MPC agent of cfg's recipe (its objective and planner) on `wm`."""
    return agent_for(resolve(cfg), wm, env, goal_image=cfg.goal)


def agent_for(recipe: Recipe, wm: WorldModel, env: gym.Env, goal_image: bool = False) -> MPCAgent:
    """The MPC agent with the recipe's objective (goal, termination, rewards) and planner."""
    o = recipe.objective
    objective = LatentObjective(
        goal=goal_latent(recipe, wm, env, goal_image) if o.goal_weight else None,
        goal_weight=o.goal_weight,
        termination_penalty=o.termination_penalty,
        termination_logit_weight=o.termination_logit_weight,
        failure_logit_weight=o.failure_logit_weight,
        reward_weight=o.reward_weight,
    )
    require(
        wm.failure_head is not None or not objective.failure_logit_weight,
        "this world model has no failure head (trained by an older version or with failure_weight 0); "
        "retrain it, or pass --failure-logit-weight 0",
    )
    obs, seed = recipe.collect.obs, recipe.collect.seed
    if obs == "state" and o.goal_state_weights is not None and objective.goal is not None:
        # the state latent is (s - mean) / std: raw-unit weights become w * std^2
        objective.goal_dim_weights = torch.tensor(o.goal_state_weights) * wm.encoder.std.cpu() ** 2
    return MPCAgent(
        wm, env.action_space, objective, recipe.planner, seed=seed, env_id=recipe.collect.env
    )


def planner_config(cfg: PlanConfig) -> PlannerConfig:
    """The planner settings of cfg's recipe (the env's, with the flags over it)."""
    return resolve(cfg).planner


def goal_latent(
    recipe: Recipe, wm: WorldModel, env: gym.Env, goal_image: bool = False
) -> torch.Tensor | None:
    """The latent to plan toward: the env's goal image (`goal_image`, --goal) or the recipe's goal
    state, else None."""
    goal_state, obs, seed = recipe.objective.goal_state, recipe.collect.obs, recipe.collect.seed
    if goal_image:
        _, info = env.reset(seed=seed + EVAL_SEED_OFFSET)
        goal_obs = info.get("goal_pixels") if obs == "pixels" else env.unwrapped.goal
        return wm.encode(torch.as_tensor(np.asarray(goal_obs))[None])[0]
    if goal_state is None:
        return None
    if obs == "state":
        return wm.encode(torch.tensor(goal_state, dtype=torch.float32)[None])[0]
    # pixels: render the goal state as a (static) frame stack
    env.reset(seed=seed)
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
    out = run_folder(cfg)
    env = check_inputs(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_recipe(resolve(cfg), out / "recipe.yaml")
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
        "recipe": str(out / "recipe.yaml"),
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


def pixel_options(cfg: PlanConfig, recipe: Recipe | None = None) -> dict[str, Any]:
    """`make_env` / `collect_rollouts` pixel options: with --model, the frames exactly as that model
    saw them, else the recipe's."""
    if cfg.model is None:
        c = (recipe or resolve(cfg)).collect
        return {"frame_stack": c.frame_stack, "size": c.size, "grayscale": c.grayscale}
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
