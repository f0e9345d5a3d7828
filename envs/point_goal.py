"""PointGoal: move a disc to a goal in a square arena; a small goal-reaching pixel env.

Registered as `vjepa_agent/PointGoal-v0` (50 steps per episode) when `envs` is imported.

- arena: [-1, 1]^2, x to the right, y up; the disc stays inside the arena.
- action: velocity command in Box(-1, 1, (2,)); the disc moves `max_speed * action` per step.
- observation (state): the disc position (x, y), float32. No velocity: motion is first order.
- goal: sampled per episode, at least `min_start_distance` from the start.
- reward: minus the distance to the goal; `terminated` (and `info["is_success"]`) once within
  `goal_radius`.
- render: an (size, size, 3) uint8 image drawn in numpy. `goal_image()` draws the scene with the
  disc at the goal, so "reach this image" is a meaningful planning target; the reset info
  carries it as `"goal_pixels"`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "vjepa_agent/PointGoal-v0"

_BACKGROUND = np.array([24, 26, 34], dtype=np.float32)
_DISC = np.array([245, 170, 40], dtype=np.float32)
_GOAL_RING = np.array([70, 200, 110], dtype=np.float32)


class PointGoalEnv(gym.Env):
    """A point (disc) driven by velocity commands toward a per-episode goal position."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        render_mode: str | None = None,
        size: int = 64,
        max_speed: float = 0.1,
        disc_radius: float = 0.1,
        goal_radius: float = 0.1,
        min_start_distance: float = 0.5,
        show_goal: bool = False,
    ):
        """`show_goal` also draws a ring at the goal in every frame (and in the goal image)."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.size = size
        self.max_speed = max_speed
        self.disc_radius = disc_radius
        self.goal_radius = goal_radius
        self.min_start_distance = min_start_distance
        self.show_goal = show_goal
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self._limit = 1.0 - disc_radius  # the disc centre stays within [-limit, limit]^2
        self._pos = np.zeros(2, dtype=np.float32)
        self._goal = np.zeros(2, dtype=np.float32)
        # Pixel-centre coordinates in arena units: x grows to the right, y grows upward.
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        self._xx, self._yy = np.meshgrid(centres, -centres)  # (size, size) each

    # ---- gymnasium API ----

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """`options` may fix `"goal"` and/or `"start"` as (x, y) positions."""
        super().reset(seed=seed)
        options = options or {}
        span = self._limit - 0.1  # keep goals off the walls
        if "goal" in options:
            self._goal = np.clip(np.asarray(options["goal"], np.float32), -span, span)
        else:
            self._goal = self.np_random.uniform(-span, span, 2).astype(np.float32)
        if "start" in options:
            self._pos = np.clip(np.asarray(options["start"], np.float32), -span, span)
        else:
            # Rejection sampling; a handful of tries suffices since the arena is much larger.
            for _ in range(100):
                self._pos = self.np_random.uniform(-span, span, 2).astype(np.float32)
                if np.linalg.norm(self._pos - self._goal) >= self.min_start_distance:
                    break
        info = self._info()
        info["goal_pixels"] = self.goal_image()
        return self._pos.copy(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.max_speed * action, -self._limit, self._limit)
        self._pos = self._pos.astype(np.float32)
        info = self._info()
        return self._pos.copy(), -info["distance"], bool(info["is_success"]), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._draw(self._pos)

    # ---- goal ----

    def goal_image(self) -> np.ndarray:
        """The scene with the disc at the goal: (size, size, 3) uint8, same style as `render()`."""
        return self._draw(self._goal)

    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()

    # ---- helpers ----

    def _info(self) -> dict[str, Any]:
        distance = float(np.linalg.norm(self._pos - self._goal))
        return {
            "distance": distance,
            "is_success": distance < self.goal_radius,
            "goal": self._goal.copy(),
        }

    def _draw(self, pos: np.ndarray) -> np.ndarray:
        px = self.size / 2.0  # pixels per arena unit
        image = np.broadcast_to(_BACKGROUND, (self.size, self.size, 3)).copy()
        dist = np.hypot(self._xx - self._goal[0], self._yy - self._goal[1]) * px
        if self.show_goal:
            ring = np.clip(1.0 - np.abs(dist - self.goal_radius * px), 0.0, 1.0)[..., None]
            image = image * (1.0 - ring) + _GOAL_RING * ring
        # Antialiased disc: coverage falls from 1 to 0 across one pixel at the rim.
        dist = np.hypot(self._xx - pos[0], self._yy - pos[1]) * px
        cover = np.clip(self.disc_radius * px - dist + 0.5, 0.0, 1.0)[..., None]
        image = image * (1.0 - cover) + _DISC * cover
        return image.round().astype(np.uint8)
