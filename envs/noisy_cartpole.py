"""NoisyCartPole: CartPole's dynamics and rendering, with fresh noise in every rendered frame.

Registered as `vjepa_agent/NoisyCartPole-v0` (500 steps per episode) when `envs` is imported.

The state, actions, rewards and terminations are CartPole-v1's, step for step. Only `render`
differs: the white background is replaced by a random texture (independent uniform grey levels
on a grid of `texture_cell` pixels, about one pixel of a 64-px observation per cell, so resizing
does not average it away; each colour channel its own), and the whole frame is scaled by a random brightness. Both are drawn
anew for every frame, from a generator of their own (seeded by `reset(seed=...)`), so the noise
never touches the dynamics' random stream.

`noise` in [0, 1] sets the strength: background levels of each channel are drawn from
[255 (1 - noise), 255] and the brightness from [1 - noise / 2, 1]; 0 renders CartPole exactly.
The noise is unpredictable by construction: a world model that predicts it wastes capacity, one
that predicts in latent space can ignore it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from vjepa_agent.errors import require

ENV_ID = "vjepa_agent/NoisyCartPole-v0"
# The default strength: the object-moment encoder's linear readout of the pole angle (3k random
# steps with exploring starts, held-out 20 %) goes from 0.0030 rad on CartPole-v1 to 0.094 at 0.25
# (31x; the cart position 0.0018 -> 0.17 m). A grey texture was not enough: 0.0095 at 0.5 (3.2x).
DEFAULT_NOISE = 0.25


class NoisyCartPoleEnv(CartPoleEnv):
    """CartPole-v1 whose rendered frames carry a fresh background texture and brightness flicker."""

    def __init__(
        self,
        render_mode: str | None = None,
        noise: float = DEFAULT_NOISE,
        texture_cell: tuple[int, int] = (4, 8),
    ):
        require(
            isinstance(noise, int | float) and 0.0 <= noise <= 1.0,
            f"noise must be in [0, 1], got {noise!r}",
        )
        super().__init__(render_mode=render_mode)
        # CartPole's unbounded velocity components as the largest float32: the same space in
        # practice, and one that gymnasium's env checker does not warn about
        high = np.where(
            np.isinf(self.observation_space.high),
            np.finfo(np.float32).max,
            self.observation_space.high,
        )
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.noise = float(noise)
        self.texture_cell = tuple(texture_cell)
        self._noise_rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:  # its own stream: the dynamics' np_random is CartPole's
            self._noise_rng = np.random.default_rng([seed, 7919])
        return super().reset(seed=seed, options=options)

    def render(self):
        frame = super().render()
        if frame is None or self.noise == 0.0 or self.render_mode != "rgb_array":
            return frame
        h, w, _ = frame.shape
        ch, cw = self.texture_cell
        gh, gw = -(-h // ch), -(-w // cw)
        cells = self._noise_rng.uniform(1.0 - self.noise, 1.0, size=(gh, 1, gw, 1, 3))
        flicker = self._noise_rng.uniform(1.0 - self.noise / 2, 1.0)  # global brightness
        # in uint8 throughout (a frame is 720k values): cells -> pixels by broadcasting, the
        # flicker on the objects through a lookup table
        cells = np.rint(cells * (255.0 * flicker)).astype(np.uint8)
        texture = np.broadcast_to(cells, (gh, ch, gw, cw, 3)).reshape(gh * ch, gw * cw, 3)[:h, :w]
        dimmed = np.rint(np.arange(256) * flicker).astype(np.uint8)[frame]
        white = (frame[..., 0] & frame[..., 1] & frame[..., 2]) == 255  # what CartPole leaves white
        return np.where(white[..., None], texture, dimmed)
