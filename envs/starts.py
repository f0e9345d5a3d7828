"""Exploring starts: collection episodes that begin where the env's own resets rarely go.

CartPole's resets put the cart within 0.05 m of the centre and random-policy episodes end within
~20 steps, so random data shows the pole almost only over the middle of the track; a planner
that balances lets the cart drift further, where a model fitted on that data has never seen the
pole. `ExploringStarts` draws chosen state components uniformly after every reset (collection
only: evaluation keeps the env's own resets).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vjepa_agent.errors import UserError

# state index -> (low, high); CartPole: the cart anywhere in +-1.5 m of the track's +-2.4 m
StartRanges = dict[int, tuple[float, float]]
DEFAULT_START_RANGES: dict[str, StartRanges] = {
    "CartPole-v0": {0: (-1.5, 1.5)},
    "CartPole-v1": {0: (-1.5, 1.5)},
    "vjepa_agent/NoisyCartPole-v0": {0: (-1.5, 1.5)},
}


# every component of the state: a cart anywhere on the track, moving either way, under a pole
# leaning and turning either way. A balancing planner's states (an upright pole over a cart that
# moves at 0.5-1 m/s, far from the centre) are combinations that episodes from a resting start do
# not show; a learned encoder fitted on cart positions alone misreads the pole there
# (docs/world_model_encoders.md)
_CARTPOLE_STATE = {0: (-2.0, 2.0), 1: (-1.5, 1.5), 2: (-0.15, 0.15), 3: (-1.5, 1.5)}
STATE_START_RANGES: dict[str, StartRanges] = {
    "CartPole-v0": _CARTPOLE_STATE,
    "CartPole-v1": _CARTPOLE_STATE,
    "vjepa_agent/NoisyCartPole-v0": _CARTPOLE_STATE,
}
SPREADS = {"position": DEFAULT_START_RANGES, "state": STATE_START_RANGES}


def default_start_ranges(env_id: str, spread: str = "position") -> StartRanges:
    """The preset start ranges of `env_id`: "position" (DEFAULT_START_RANGES) or "state"
    (STATE_START_RANGES), or a one-line `UserError` naming the envs with some."""
    if spread not in SPREADS:
        raise UserError(f"start spread must be one of {sorted(SPREADS)}, got '{spread}'")
    table = SPREADS[spread]
    if env_id not in table:
        raise UserError(
            f"--exploring-starts has no start ranges for {env_id} (the {spread} spread of "
            f"vjepa_agent.envs.starts has them for {sorted(table)}); drop the flag"
        )
    return table[env_id]


def check_start_ranges(env: gym.Env, ranges: StartRanges) -> None:
    """Raise `UserError` unless `env` has a settable state vector the ranges index into."""
    base = env.unwrapped
    name = env.spec.id if env.spec is not None else type(base).__name__
    if not hasattr(base, "state"):
        raise UserError(
            f"exploring starts set env.unwrapped.state, and '{name}' has none; collect without them"
        )
    for i, (low, high) in ranges.items():
        if not low <= high:
            raise UserError(f"start range of state[{i}] must have low <= high, got ({low}, {high})")
        state = base.state  # None before the first reset (CartPole)
        if state is not None and not 0 <= i < len(state):
            raise UserError(f"start range index {i} is outside '{name}''s state of {len(state)}")


class ExploringStarts(gym.Wrapper):
    """After each reset, `env.unwrapped.state[i] ~ U(low, high)` for every `i: (low, high)` in
    `ranges`, drawn from the env's own seeded generator; the observation is recomputed."""

    def __init__(self, env: gym.Env, ranges: StartRanges):
        check_start_ranges(env, ranges)
        super().__init__(env)
        self.ranges = dict(ranges)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        state = np.array(base.state, dtype=np.float64)
        for i, (low, high) in self.ranges.items():
            state[i] = self.np_random.uniform(low, high)
        base.state = state
        if hasattr(base, "_get_obs"):
            obs = base._get_obs()
        else:  # CartPole: the observation is the state
            obs = state.astype(np.asarray(obs).dtype)
        return obs, info
