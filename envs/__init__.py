"""Gymnasium environments and wrappers for vjepa_agent (installed as `vjepa_agent.envs`): pixel
observations with frame stacks, the PointGoal goal-reaching env, and rollout collection into a
`RolloutStore`.

Importing this package (which `import vjepa_agent` does) registers `vjepa_agent/PointGoal-v0`
and `vjepa_agent/NoisyCartPole-v0` with gymnasium and defaults `SDL_VIDEODRIVER` to `dummy`, so
pygame-rendered envs (CartPole) work headless. The torch-using parts (`pixels`, `collect`) load
on first use.
"""

import importlib
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402

from .noisy_cartpole import ENV_ID as NOISY_CARTPOLE_ID  # noqa: E402
from .noisy_cartpole import NoisyCartPoleEnv  # noqa: E402
from .point_goal import ENV_ID as POINT_GOAL_ID  # noqa: E402
from .point_goal import PointGoalEnv  # noqa: E402
from .starts import DEFAULT_START_RANGES, ExploringStarts  # noqa: E402

if POINT_GOAL_ID not in gym.registry:
    gym.register(
        id=POINT_GOAL_ID,
        entry_point="vjepa_agent.envs.point_goal:PointGoalEnv",
        max_episode_steps=50,
    )
if NOISY_CARTPOLE_ID not in gym.registry:  # CartPole-v1's limits
    gym.register(
        id=NOISY_CARTPOLE_ID,
        entry_point="vjepa_agent.envs.noisy_cartpole:NoisyCartPoleEnv",
        max_episode_steps=500,
        reward_threshold=475.0,
    )


def __getattr__(name: str):
    # pixels and collect import torch: loaded on first use, so that `import vjepa_agent` stays
    # cheap (import_module, not `from . import`, which would ask this function for the name again)
    if name in ("pixels", "DEFAULT_CROPS", "PixelObservation", "make_env"):
        pixels = importlib.import_module(f"{__name__}.pixels")
        return pixels if name == "pixels" else getattr(pixels, name)
    if name in ("collect", "collect_rollouts"):
        collect = importlib.import_module(f"{__name__}.collect")
        return collect if name == "collect" else collect.collect_rollouts
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


__all__ = [
    "DEFAULT_CROPS",
    "DEFAULT_START_RANGES",
    "ExploringStarts",
    "NOISY_CARTPOLE_ID",
    "NoisyCartPoleEnv",
    "POINT_GOAL_ID",
    "PixelObservation",
    "PointGoalEnv",
    "collect_rollouts",
    "make_env",
]
