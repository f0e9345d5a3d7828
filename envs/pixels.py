"""Pixel observations for any gymnasium env that renders `rgb_array`.

`make_env` is the one way in: `obs="state"` returns the env's own (float32) observation,
`obs="pixels"` wraps it in `PixelObservation`, whose observation is a uint8 stack of the last
`frame_stack` rendered frames, shape (C, T, H, W), ready for a video encoder with tubelets of
T frames (one CartPole frame shows no velocity; two do).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.envs.registration import load_env_creator

from vjepa_agent.errors import UserError

# A crop is a pixel box (top, bottom, left, right) of the rendered frame, numpy-slice style.
Crop = tuple[int, int, int, int]


# CartPole renders 600 x 400 with the cart (50 x 30 px) on a track 100 px above the bottom and
# the pole 125 px long: rows 150..330 hold everything (the cart's x range spans the full width),
# which more than doubles the vertical resolution.
_CARTPOLE_CROP: Crop = (150, 330, 0, 600)

# Default crops, in rendered pixels, for envs whose frames are mostly empty.
DEFAULT_CROPS: dict[str, Crop] = {
    "CartPole-v0": _CARTPOLE_CROP,
    "CartPole-v1": _CARTPOLE_CROP,
    "vjepa_agent/NoisyCartPole-v0": _CARTPOLE_CROP,
}

# ITU-R BT.601 luma weights for grayscale.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """Return the registered spec of `env_id`, or raise `UserError` if gymnasium does not know it."""
    try:
        return gym.spec(env_id)
    except gym.error.Error as e:
        raise UserError(
            f"unknown environment '{env_id}'; check the id (gymnasium.pprint_registry() lists the "
            f"registered ones) or import the package that registers it ({e})"
        ) from None


def check_renders_rgb(spec: gym.envs.registration.EnvSpec) -> None:
    """Raise `UserError` unless the env of `spec` declares the `rgb_array` render mode."""
    creator = spec.entry_point if callable(spec.entry_point) else load_env_creator(spec.entry_point)
    modes = getattr(creator, "metadata", {}).get("render_modes", [])
    if "rgb_array" not in modes:
        raise UserError(
            f"environment '{spec.id}' cannot render rgb_array images (render modes: {list(modes)}), "
            f"so it has no pixel observations; use obs='state' or an env that renders rgb_array"
        )


def resolve_crop(env_id: str, crop: Crop | Literal["auto"] | None) -> Crop | None:
    """`"auto"` -> the default crop of `env_id` from `DEFAULT_CROPS` (None if it has none)."""
    return DEFAULT_CROPS.get(env_id) if crop == "auto" else crop


class PixelObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace the observation by the last `frame_stack` rendered frames, uint8 (C, T, H, W).

    Each frame is rendered once per `reset` / `step` (`rgb_array`), cropped to `crop`
    (top, bottom, left, right) if given, optionally converted to grayscale, and resized in torch
    with antialiasing to `size`. After a reset the stack is filled with copies of the first frame.
    `crop` is in rendered pixels.

    `info["state"]` holds the wrapped env's own observation. If the env has a `goal_image()`
    method (see `envs.point_goal`), the reset info's `"goal_pixels"` is replaced by the goal
    image processed like an observation, (C, T, H, W), and `goal_observation()` returns it.
    """

    def __init__(
        self,
        env: gym.Env,
        size: int | tuple[int, int] = 64,
        grayscale: bool = False,
        frame_stack: int = 2,
        crop: Crop | None = None,
    ):
        # Recording the arguments lets `env.spec` recreate the wrapped env (check_env does).
        gym.utils.RecordConstructorArgs.__init__(
            self,
            size=size,
            grayscale=grayscale,
            frame_stack=frame_stack,
            crop=crop,
        )
        gym.Wrapper.__init__(self, env)
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        if env.render_mode != "rgb_array":
            raise UserError(
                f"PixelObservation needs an env made with render_mode='rgb_array' but '{name}' has "
                f"render_mode={env.render_mode!r}; create it with gym.make(..., render_mode='rgb_array') "
                f"or use vjepa_agent.envs.make_env(..., obs='pixels')"
            )
        if frame_stack < 1:
            raise UserError(f"frame_stack must be at least 1, got {frame_stack}")
        if crop is not None:
            top, bottom, left, right = crop
            if not (0 <= top < bottom and 0 <= left < right):
                raise UserError(
                    f"crop must be (top, bottom, left, right) with top < bottom and left < right, got {crop}"
                )
        # Frames come from rgb_array renders, so that is the only render mode this env has.
        self.metadata = {**env.metadata, "render_modes": ["rgb_array"]}
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.grayscale = grayscale
        self.frame_stack = frame_stack
        self.crop = crop
        channels = 1 if grayscale else 3
        self.observation_space = gym.spaces.Box(
            0, 255, (channels, frame_stack, *self.size), dtype=np.uint8
        )
        self._frames: deque[np.ndarray] = deque(maxlen=frame_stack)

    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        """One rendered frame (H0, W0, 3) uint8 -> (C, H, W) uint8: crop, grayscale, resize."""
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)  # (3, H0, W0)
        if self.crop is not None:
            top, bottom, left, right = self.crop
            x = x[:, top:bottom, left:right]
        x = x.float()
        if self.grayscale:
            x = torch.einsum("chw,c->hw", x[:3], _LUMA).unsqueeze(0)  # (1, H0, W0)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x.unsqueeze(0), size=self.size, mode="bilinear", antialias=True, align_corners=False
            ).squeeze(0)
        return x.round_().clamp_(0, 255).to(torch.uint8).numpy()  # (C, H, W)

    def _observation(self) -> np.ndarray:
        return np.stack(self._frames, axis=1)  # (C, T, H, W)

    def _render_frame(self) -> np.ndarray:
        frame = self.env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise UserError(
                f"PixelObservation expected render() to return an (H, W, 3) image but got "
                f"{type(frame).__name__}; use an env whose rgb_array render returns one image"
            )
        return self.process_frame(frame)

    def goal_observation(self) -> np.ndarray:
        """The env's goal image processed like an observation and repeated T times, (C, T, H, W)."""
        goal_image = getattr(self.env.unwrapped, "goal_image", None)
        if goal_image is None:
            raise UserError(
                f"environment '{type(self.env.unwrapped).__name__}' has no goal image; "
                f"use a goal env such as vjepa_agent/PointGoal-v0"
            )
        frame = self.process_frame(goal_image())
        return np.repeat(frame[:, None], self.frame_stack, axis=1)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        state, info = self.env.reset(seed=seed, options=options)
        frame = self._render_frame()
        self._frames.clear()
        self._frames.extend([frame] * self.frame_stack)
        info = {**info, "state": state}
        if "goal_pixels" in info:
            info["goal_pixels"] = self.goal_observation()
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        state, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(self._render_frame())
        return self._observation(), reward, terminated, truncated, {**info, "state": state}


def make_env(
    env_id: str,
    obs: Literal["pixels", "state"] = "pixels",
    size: int | tuple[int, int] = 64,
    grayscale: bool = False,
    frame_stack: int = 2,
    seed: int | None = None,
    crop: Crop | Literal["auto"] | None = "auto",
    **kwargs: Any,
) -> gym.Env:
    """Make `env_id` with pixel (uint8 (C, T, H, W)) or state (float32) observations.

    `crop="auto"` uses `DEFAULT_CROPS[env_id]` when there is one (CartPole), None keeps the whole
    frame. `seed`
    seeds the first reset and the action space, so a later `reset()` without a seed continues
    deterministically. Extra `kwargs` go to `gym.make` (e.g. `max_episode_steps`).
    """
    spec = check_env_id(env_id)
    if obs not in ("pixels", "state"):
        raise UserError(f"obs must be 'pixels' or 'state', got {obs!r}")
    if obs == "pixels":
        check_renders_rgb(spec)
        env = gym.make(env_id, render_mode="rgb_array", **kwargs)
        crop = resolve_crop(env_id, crop)
        env = PixelObservation(env, size, grayscale, frame_stack, crop)
    else:
        env = float32_observations(gym.make(env_id, **kwargs))
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def float32_observations(env: gym.Env) -> gym.Env:
    """Cast a float Box observation of another precision to float32 (no-op for float32 envs)."""
    space = env.observation_space
    if (
        isinstance(space, gym.spaces.Box)
        and np.issubdtype(space.dtype, np.floating)
        and space.dtype != np.float32
    ):
        return gym.wrappers.DtypeObservation(env, np.float32)
    return env
