"""A gymnasium env that steps inside a world model: reset from a real observation, then imagine.

Any model-free algorithm can train in it: observations are latents, rewards and terminations come
from the model's heads, the action space is the real env's.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from vjepa_agent.world_model import WorldModel


class ImaginedEnv(gym.Env):
    """Latent-space env: `reset` encodes a real observation of `real_env`; `step` predicts."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        wm: WorldModel,
        real_env: gym.Env,
        max_episode_steps: int = 100,
        termination_threshold: float = 0.5,
    ):
        super().__init__()
        self.wm, self.real_env = wm.eval(), real_env
        self.max_episode_steps = max_episode_steps
        self.termination_threshold = termination_threshold
        self.action_space = real_env.action_space
        shape = (wm.latent_dim,) if wm.compact else (wm.tokens_per_frame, wm.latent_dim)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, dtype=np.float32)
        self.device = next(wm.parameters()).device
        self._z: torch.Tensor | None = None
        self._steps = 0

    def _obs(self) -> np.ndarray:
        return self._z[0].detach().cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        real_obs, info = self.real_env.reset(seed=seed, options=options)
        self._z = self.wm.encode(torch.as_tensor(np.asarray(real_obs), device=self.device)[None])
        self._steps = 0
        return self._obs(), {}

    @torch.no_grad()
    def step(self, action):
        if self._z is None:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(np.asarray(action), device=self.device)[None]
        self._z = self.wm.predict(self._z, a)
        self._steps += 1
        reward = float(self.wm.reward(self._z)[0])
        p_done = float(self.wm.termination(self._z)[0])
        terminated = p_done > self.termination_threshold
        truncated = self._steps >= self.max_episode_steps
        return self._obs(), reward, terminated, truncated, {"termination_probability": p_done}
