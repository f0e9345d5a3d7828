"""Gymnasium environments and wrappers for vjepa_agent: pixel observations with frame stacks,
the PointGoal goal-reaching env, and rollout collection into a `RolloutStore`.

Importing this package registers `vjepa_agent/PointGoal-v0` and `vjepa_agent/NoisyCartPole-v0` with gymnasium and defaults
`SDL_VIDEODRIVER` to `dummy`, so pygame-rendered envs (CartPole) work headless.
"""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402

from envs.noisy_cartpole import ENV_ID as NOISY_CARTPOLE_ID  # noqa: E402
from envs.noisy_cartpole import NoisyCartPoleEnv  # noqa: E402
from envs.point_goal import ENV_ID as POINT_GOAL_ID  # noqa: E402
from envs.point_goal import PointGoalEnv  # noqa: E402

if POINT_GOAL_ID not in gym.registry:
    gym.register(id=POINT_GOAL_ID, entry_point="envs.point_goal:PointGoalEnv", max_episode_steps=50)
if NOISY_CARTPOLE_ID not in gym.registry:  # CartPole-v1's limits
    gym.register(
        id=NOISY_CARTPOLE_ID,
        entry_point="envs.noisy_cartpole:NoisyCartPoleEnv",
        max_episode_steps=500,
        reward_threshold=475.0,
    )

from envs.collect import collect_rollouts  # noqa: E402
from envs.pixels import DEFAULT_CROPS, PixelObservation, make_env  # noqa: E402
from envs.starts import DEFAULT_START_RANGES, ExploringStarts  # noqa: E402

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
