"""Collect transitions from a vector env into a TensorDict (and optionally a `RolloutStore`).

The vector env autoresets in the same step (`AutoresetMode.SAME_STEP`): when a sub-env ends,
`step` returns the first observation of its next episode and puts the terminal one in
`info["final_obs"]` (and the terminal state in `info["final_info"]["state"]`). We record the
terminal observation as the final transition's next observation, so episode boundaries are
exact, then reorder rows so each episode is contiguous (see `vjepa_agent.data.rollouts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from vjepa_agent.data.rollouts import RolloutStore, describe_space, write_episode_videos
from vjepa_agent.errors import UserError, require
from vjepa_agent.threads import torch_threads

from .pixels import (
    Crop,
    PixelObservation,
    check_env_id,
    check_renders_rgb,
    float32_observations,
    resolve_crop,
)
from .starts import ExploringStarts, StartRanges

Policy = Callable[[np.ndarray], Any]


def collect_rollouts(
    env_id: str,
    steps: int,
    out: str | Path | None = None,
    obs: Literal["pixels", "state"] = "pixels",
    num_envs: int = 4,
    policy: Policy | None = None,
    seed: int = 0,
    size: int = 64,
    frame_stack: int = 2,
    progress: bool = True,
    video_dir: str | Path | None = None,
    *,
    grayscale: bool = False,
    crop: Crop | Literal["auto"] | None = "auto",
    start_ranges: StartRanges | None = None,
    env_kwargs: dict[str, Any] | None = None,
    sticky_actions: float = 0.0,
) -> TensorDict:
    """Run `num_envs` copies of `env_id` for `steps` transitions in total; return them, batch [steps].

    `policy(obs_batch) -> actions` gets the batched observations as numpy, (num_envs, C, T, H, W)
    uint8 in pixel mode or (num_envs, *O) in state mode, and returns num_envs actions (numpy,
    torch or list); a policy with an `episodes_ended(done)` method is told (bool (num_envs,))
    which envs were reset after each step (`MPCAgent` is such a policy); None samples uniformly from the action space, seeded by `seed`. Sub-env i
    is reset with seed `seed + i`. `sticky_actions` p (random policy only): each env repeats its
    previous action with probability p and draws a fresh one otherwise (and after a reset), so
    runs of one action last 2 / (1 - p) steps on average with two actions instead of 2: pushes
    that act over several steps, whose effects a model can see (CartPole moves the pole only from
    the second step after a push, by 0.0116 rad).

    With `out`, the data is appended as one chunk to the `RolloutStore` there (created if
    missing; an existing store must match env, obs, size and frame_stack). With `video_dir`
    (pixel mode), each episode is also written as an mp4. Memory: everything is held in memory
    until the end, about 2 * C * T * H * W bytes per transition in pixel mode; collect large
    data sets in several calls into the same `out`. `start_ranges` ({state index: (low, high)},
    see `vjepa_agent.envs.starts`) starts every episode with those state components drawn uniformly.
    """
    # Step 0: validate everything before any env runs.
    pixels, crop, store = _check_collection(
        env_id, steps, obs, num_envs, out, size, frame_stack, crop, video_dir, sticky_actions
    )

    # Step 1: the vector env (same-step autoreset: terminal obs arrive in info["final_obs"]).
    envs = _make_vector_env(
        env_id, num_envs, pixels, size, grayscale, frame_stack, crop, start_ranges, env_kwargs
    )
    # frames are small: extra threads only fight over the cores (30x slower under load)
    try:
        with torch_threads(1):
            td = _run(envs, steps, pixels, policy, seed, progress, env_id, sticky_actions)
        fps = int(envs.metadata.get("render_fps") or 20)
        action_space = describe_space(envs.single_action_space)
    finally:
        envs.close()

    # Step 2: number episodes after those already in the store, then write.
    if out is not None:
        if store is None:
            meta = {
                "env_id": env_id,
                "obs": obs,
                "size": size if pixels else None,
                "frame_stack": frame_stack if pixels else None,
                "grayscale": grayscale if pixels else None,
                "crop": list(crop) if crop is not None else None,
                "start_ranges": {str(i): list(r) for i, r in (start_ranges or {}).items()},
                "action_space": action_space,
                "observation_shape": list(td["observation"].shape[1:]),
                "pixels_shape": list(td["pixels"].shape[1:]) if pixels else None,
                "seed": seed,
                "sticky_actions": sticky_actions if policy is None else None,
            }
            store = RolloutStore.create(out, meta)
        td["episode"] += store.next_episode_id
        store.append(td)
    if video_dir is not None:
        write_episode_videos(td, video_dir, fps=fps)
    return td


def _check_collection(
    env_id: str,
    steps: int,
    obs: str,
    num_envs: int,
    out: str | Path | None,
    size: int,
    frame_stack: int,
    crop: Crop | Literal["auto"] | None,
    video_dir: str | Path | None,
    sticky_actions: float,
) -> tuple[bool, Crop | None, RolloutStore | None]:
    """Every check of `collect_rollouts` that needs no env step, as one-line errors; returns
    (pixel observations?, the resolved crop, the store already at `out` or None)."""
    require(0 <= sticky_actions < 1, f"sticky_actions must be in [0, 1), got {sticky_actions}")
    spec = check_env_id(env_id)
    if obs not in ("pixels", "state"):
        raise UserError(f"obs must be 'pixels' or 'state', got {obs!r}")
    if steps < 1 or num_envs < 1:
        raise UserError(
            f"steps and num_envs must be positive, got steps={steps}, num_envs={num_envs}"
        )
    if video_dir is not None and obs != "pixels":
        raise UserError(
            "video_dir needs pixel observations; collect with obs='pixels' or drop video_dir"
        )
    pixels = obs == "pixels"
    if pixels:
        check_renders_rgb(spec)
    crop = resolve_crop(env_id, crop) if pixels else None
    store = None
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        store = RolloutStore.open(
            out,
            expect_env=env_id,
            expect_obs=obs,
            expect_size=size if pixels else None,
            expect_frame_stack=frame_stack if pixels else None,
        )
        if pixels and (store.meta.get("render_scale") or 1) != 1:
            raise UserError(
                f"rollout store '{out}' holds frames rendered at a larger scale, which this "
                "version does not render; collect into a new folder"
            )
    return pixels, crop, store


def _make_vector_env(
    env_id: str,
    num_envs: int,
    pixels: bool,
    size: int,
    grayscale: bool,
    frame_stack: int,
    crop: Crop | None,
    start_ranges: StartRanges | None,
    env_kwargs: dict[str, Any] | None,
) -> gym.vector.VectorEnv:
    """`num_envs` synchronous copies of `env_id` with same-step autoreset, each wrapped for pixel
    (uint8 frame stacks) or state (float32) observations, exploring starts innermost."""
    if pixels:
        wrapper = partial(
            PixelObservation,
            size=size,
            grayscale=grayscale,
            frame_stack=frame_stack,
            crop=crop,
        )
        make_kwargs = {"render_mode": "rgb_array", **(env_kwargs or {})}
    else:
        wrapper = float32_observations
        make_kwargs = dict(env_kwargs or {})
    wrappers = [wrapper]
    if start_ranges:  # innermost, so the first frame already shows the drawn state
        wrappers.insert(0, partial(ExploringStarts, ranges=start_ranges))
    return gym.make_vec(
        env_id,
        num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        wrappers=wrappers,
        **make_kwargs,
    )


def _run(
    envs: gym.vector.VectorEnv,
    steps: int,
    pixels: bool,
    policy: Policy | None,
    seed: int,
    progress: bool,
    env_id: str,
    sticky_actions: float = 0.0,
) -> TensorDict:
    """Step `envs` ceil(steps / E) times; return `steps` transitions ordered by (episode, step)."""
    E = envs.num_envs
    n_vec = math.ceil(steps / E)
    act_shape, act_dtype, state_shape = _check_spaces(envs, pixels, env_id)
    # Time-major buffers (n_vec, E, ...), reordered into episodes at the end.
    pix_shape = envs.single_observation_space.shape if pixels else None
    buf = _time_major_buffers(n_vec, E, state_shape, act_shape, act_dtype, pix_shape)

    obs_b, info = envs.reset(seed=seed)
    envs.action_space.seed(seed)
    state_b = info["state"] if pixels else obs_b
    episode_of_env = np.arange(E)  # provisional ids: in order of episode start
    step_of_env = np.zeros(E, np.int64)
    next_provisional = E
    finished: list[int] = []  # provisional ids in order of completion

    sticky_rng = np.random.default_rng([seed, 1])  # only drawn from when sticky_actions > 0
    last_actions, fresh = None, np.ones(E, bool)  # fresh: reset since the last action
    bar = tqdm(total=steps, disable=not progress, unit="step", desc=f"collect {env_id}")
    for t in range(n_vec):
        if policy is None:
            actions = envs.action_space.sample()
            if sticky_actions and last_actions is not None:
                keep = (sticky_rng.random(E) < sticky_actions) & ~fresh
                actions[keep] = last_actions[keep]
            last_actions = actions.copy()
        else:
            actions = _as_actions(policy(obs_b), E, act_shape, act_dtype)
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        fresh = done
        if done.any() and hasattr(policy, "episodes_ended"):
            policy.episodes_ended(done)  # a stateful policy (e.g. MPCAgent) forgets those envs
        next_pix, next_state = _true_next_observations(next_obs, info, done, pixels)

        buf["observation"][t] = state_b
        buf["next_observation"][t] = next_state
        buf["action"][t] = actions
        buf["reward"][t] = reward
        buf["terminated"][t] = terminated
        buf["truncated"][t] = truncated
        buf["episode"][t] = episode_of_env
        buf["step"][t] = step_of_env
        if pixels:
            buf["pixels"][t] = obs_b
            buf["next_pixels"][t] = next_pix

        step_of_env += 1
        for i in np.flatnonzero(done):
            finished.append(int(episode_of_env[i]))
            episode_of_env[i] = next_provisional
            next_provisional += 1
            step_of_env[i] = 0
        obs_b = next_obs
        state_b = info["state"] if pixels else next_obs
        bar.update(min(E, steps - t * E))
    bar.close()

    # Final ids: finished episodes in completion order, then the ones cut by the step budget.
    cut = [int(episode_of_env[i]) for i in range(E) if step_of_env[i] > 0]
    return _in_episode_order(buf, steps, finished + cut, next_provisional, pixels)


def _check_spaces(
    envs: gym.vector.VectorEnv, pixels: bool, env_id: str
) -> tuple[tuple[int, ...], type, tuple[int, ...]]:
    """(action shape, action dtype, state shape) of a sub-env; one-line errors for the spaces
    collection does not store."""
    act_space = envs.single_action_space
    if isinstance(act_space, gym.spaces.Discrete):
        act_shape, act_dtype = (), np.int64
    elif isinstance(act_space, gym.spaces.Box):
        act_shape, act_dtype = act_space.shape, np.float32
    else:
        raise UserError(
            f"environment '{env_id}' has a {type(act_space).__name__} action space; collection "
            f"supports Discrete and Box actions"
        )
    state_space = envs.single_observation_space
    if pixels:
        state_space = envs.envs[0].env.observation_space  # the env under PixelObservation
    if not isinstance(state_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise UserError(
            f"environment '{env_id}' has a {type(state_space).__name__} observation space; "
            f"collection stores Box (or Discrete) observations only"
        )
    return act_shape, act_dtype, state_space.shape


def _time_major_buffers(
    n_vec: int,
    num_envs: int,
    state_shape: tuple[int, ...],
    act_shape: tuple[int, ...],
    act_dtype: type,
    pix_shape: tuple[int, ...] | None,
) -> dict[str, np.ndarray]:
    """Zeroed (n_vec, E, ...) arrays for every recorded field (pixels only with `pix_shape`)."""
    shape = (n_vec, num_envs)
    buf: dict[str, np.ndarray] = {
        "observation": np.zeros((*shape, *state_shape), np.float32),
        "next_observation": np.zeros((*shape, *state_shape), np.float32),
        "action": np.zeros((*shape, *act_shape), act_dtype),
        "reward": np.zeros(shape, np.float32),
        "terminated": np.zeros(shape, bool),
        "truncated": np.zeros(shape, bool),
        "episode": np.zeros(shape, np.int64),  # provisional id, renumbered at the end
        "step": np.zeros(shape, np.int64),
    }
    if pix_shape is not None:
        buf["pixels"] = np.zeros((*shape, *pix_shape), np.uint8)
        buf["next_pixels"] = np.zeros((*shape, *pix_shape), np.uint8)
    return buf


def _true_next_observations(
    next_obs: np.ndarray, info: dict[str, Any], done: np.ndarray, pixels: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(next pixels, next states) as recorded: the terminal observation where an episode ended
    (same-step autoreset returns the next episode's first one in `next_obs`)."""
    next_pix = next_obs.copy()
    next_state = np.array(info["state"] if pixels else next_obs, dtype=np.float32, copy=True)
    for i in np.flatnonzero(done):
        next_pix[i] = info["final_obs"][i]
        next_state[i] = info["final_info"]["state"][i] if pixels else info["final_obs"][i]
    return next_pix, next_state


def _in_episode_order(
    buf: dict[str, np.ndarray],
    steps: int,
    order: list[int],
    num_provisional: int,
    pixels: bool,
) -> TensorDict:
    """The first `steps` transitions of the time-major buffers as a TensorDict ordered by
    (episode, step), the provisional episode ids renumbered 0, 1, ... in `order`."""
    n_vec, E = buf["reward"].shape
    rank = np.full(num_provisional, -1, np.int64)
    rank[order] = np.arange(len(order))
    episode = rank[buf.pop("episode").reshape(-1)]
    step = buf.pop("step").reshape(-1)
    perm = np.argsort(episode * (n_vec + 1) + step, kind="stable")[:steps]

    def take(name: str, shape: tuple[int, ...] = ()) -> torch.Tensor:
        # Reorder one buffer at a time and free it, to keep peak memory low.
        arr = buf.pop(name)
        flat = arr.reshape(n_vec * E, *arr.shape[2:])[perm]
        return torch.from_numpy(flat.reshape(steps, *shape) if shape else flat)

    terminated_t = take("terminated", (1,))
    truncated_t = take("truncated", (1,))
    td = TensorDict(
        {
            "observation": take("observation"),
            "action": take("action"),
            "episode": torch.from_numpy(episode[perm]),
            "step": torch.from_numpy(step[perm]),
            "next": {
                "observation": take("next_observation"),
                "reward": take("reward", (1,)),
                "terminated": terminated_t,
                "truncated": truncated_t,
                "done": terminated_t | truncated_t,
            },
        },
        batch_size=[steps],
    )
    if pixels:
        td["pixels"] = take("pixels")
        td["next", "pixels"] = take("next_pixels")
    return td


def _as_actions(actions: Any, num_envs: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Policy output (numpy, torch, list) -> (num_envs, *shape) array of the action dtype."""
    if isinstance(actions, torch.Tensor):
        actions = actions.detach().cpu().numpy()
    actions = np.asarray(actions)
    if actions.size != num_envs * math.prod(shape):
        raise UserError(
            f"the policy returned actions of shape {actions.shape} but {num_envs} envs need "
            f"({num_envs}, {', '.join(map(str, shape))}); return one action per env"
        )
    return actions.reshape(num_envs, *shape).astype(dtype)
