"""A gymnasium env that steps inside a world model: reset from a real observation, then imagine.

Any model-free algorithm can train in it: observations are latents, rewards and terminations come
from the model's heads, the action space is the real env's. `ImaginedVectorEnv` steps E of them in
one predictor call (gymnasium's VectorEnv API, same-step autoreset).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from vjepa_agent.errors import require
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
        shape = wm.latent_shape
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


class ImaginedVectorEnv(gym.vector.VectorEnv):
    """`num_envs` imagined envs stepped together: one `predict` call per step for all of them.

    Sub-env i resets from `real_env.reset(seed=seed + i)` (the real observations are encoded in
    one call), so it equals an `ImaginedEnv` reset with that seed and given the same actions.
    Autoreset is same-step: a sub-env that terminates or truncates is reset from a new real
    observation within that step, and its last latent is in `info["final_obs"]` (mask
    `info["_final_obs"]`). `info["termination_probability"]` is (num_envs,).
    """

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        wm: WorldModel,
        real_env: gym.Env,
        num_envs: int,
        max_episode_steps: int = 100,
        termination_threshold: float = 0.5,
    ):
        require(num_envs >= 1, f"num_envs must be at least 1, got {num_envs}")
        self.wm, self.real_env = wm.eval(), real_env
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.termination_threshold = termination_threshold
        shape = wm.latent_shape
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape, dtype=np.float32)
        self.single_action_space = real_env.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.device = next(wm.parameters()).device
        self._z: torch.Tensor | None = None  # (E, *latent)
        self._steps = np.zeros(num_envs, dtype=np.int64)

    def _real_starts(self, seeds: list[int | None]) -> torch.Tensor:
        """Encode one real reset observation per seed: (len(seeds), *latent)."""
        obs = [np.asarray(self.real_env.reset(seed=s)[0]) for s in seeds]
        return self.wm.encode(torch.as_tensor(np.stack(obs), device=self.device))

    @torch.no_grad()
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            require(
                len(seed) == self.num_envs,
                f"reset got {len(seed)} seeds for {self.num_envs} envs; pass one int or one per env",
            )
            seeds = list(seed)
        self._z = self._real_starts(seeds)
        self._steps[:] = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return self._z.detach().cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def step(self, actions):
        if self._z is None:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(np.asarray(actions), device=self.device)
        self._z = self.wm.predict(self._z, a)  # (E, *latent), all envs in one call
        self._steps += 1
        rewards = self.wm.reward(self._z).cpu().numpy().astype(np.float64)
        p_done = self.wm.termination(self._z).cpu().numpy().astype(np.float64)
        terminated = p_done > self.termination_threshold
        truncated = self._steps >= self.max_episode_steps
        infos: dict = {"termination_probability": p_done}
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            final = self._obs()
            for i in done:
                infos = self._add_info(infos, {"final_obs": final[i], "final_info": {}}, i)
            self._z[torch.as_tensor(done, device=self.device)] = self._real_starts(
                [None] * len(done)
            )
            self._steps[done] = 0
        return self._obs(), rewards, terminated, truncated, infos
