"""Pixel wrapper, make_env and the PointGoal env: shapes, gymnasium API compliance, errors."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import warnings  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402
from vjepa_agent.envs import POINT_GOAL_ID, PointGoalEnv, make_env  # noqa: E402

from vjepa_agent import envs  # noqa: E402
from vjepa_agent.errors import UserError  # noqa: E402


class _NoRenderEnv(gym.Env):
    """A state-only env that declares no render modes."""

    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


if "tests/NoRender-v0" not in gym.registry:
    gym.register("tests/NoRender-v0", entry_point=_NoRenderEnv)


def _check_env_clean(env: gym.Env) -> None:
    """check_env with every warning an error, except the one about checking a wrapped env."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    problems = [
        str(w.message) for w in caught if "different from the unwrapped" not in str(w.message)
    ]
    assert not problems, problems


def test_cartpole_pixels_shape_and_frame_stack():
    env = make_env("CartPole-v1", size=64, seed=0)
    obs, info = env.reset()
    assert env.observation_space.shape == (3, 2, 64, 64)
    assert obs.shape == (3, 2, 64, 64) and obs.dtype == np.uint8
    assert np.array_equal(obs[:, 0], obs[:, 1])  # reset fills the stack with the first frame
    assert info["state"].shape == (4,)
    obs2, _, _, _, info2 = env.step(1)
    assert np.array_equal(obs2[:, 0], obs[:, 1])  # the stack shifts by one frame per step
    for _ in range(4):
        obs3, *_ = env.step(1)
    assert not np.array_equal(obs3[:, 1], obs[:, 1])  # pushed right 5 times: the cart moved
    assert info2["state"].dtype == np.float32
    env.close()


def test_grayscale_and_state_modes():
    gray = make_env("CartPole-v1", size=64, grayscale=True, frame_stack=2)
    obs, _ = gray.reset(seed=1)
    assert obs.shape == (1, 2, 64, 64) and obs.dtype == np.uint8
    state = make_env("CartPole-v1", obs="state")
    obs, _ = state.reset(seed=1)
    assert obs.shape == (4,) and obs.dtype == np.float32
    point = make_env(POINT_GOAL_ID, obs="state")
    obs, _ = point.reset(seed=1)
    assert obs.shape == (2,) and obs.dtype == np.float32


def test_cartpole_default_crop_keeps_the_cart():
    env = make_env("CartPole-v1", size=64, seed=0)
    assert env.crop == envs.DEFAULT_CROPS["CartPole-v1"] == (150, 330, 0, 600)
    assert make_env("CartPole-v1", size=32, crop=None).crop is None
    obs, _ = env.reset()
    assert (obs < 100).any()  # the dark cart is inside the cropped band


@pytest.mark.parametrize(
    "env_id,obs",
    [("CartPole-v1", "pixels"), (POINT_GOAL_ID, "pixels"), (POINT_GOAL_ID, "state")],
)
def test_check_env_clean(env_id, obs):
    _check_env_clean(make_env(env_id, obs=obs, size=32))


def test_check_env_point_goal_unwrapped():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(PointGoalEnv(render_mode="rgb_array"))
    # Without gym.make there is no spec, so check_env cannot test other render modes.
    assert all("not having a spec" in str(w.message) for w in caught)


def test_unknown_env_id():
    with pytest.raises(UserError, match="unknown environment 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")


def test_non_rendering_env_in_pixel_mode():
    with pytest.raises(UserError, match="cannot render rgb_array"):
        make_env("tests/NoRender-v0", obs="pixels")
    assert make_env("tests/NoRender-v0", obs="state").reset(seed=0)[0].shape == (2,)


def test_point_goal_reaches_goal_and_truncates():
    env = gym.make(POINT_GOAL_ID, render_mode="rgb_array")
    obs, info = env.reset(seed=0, options={"start": (-0.55, 0.0), "goal": (0.5, 0.0)})
    assert info["goal_pixels"].shape == (64, 64, 3)
    for _ in range(9):  # 0.1 per step: 9 steps leave 0.15, outside the 0.1 radius
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], np.float32))
        assert not terminated
    assert reward == pytest.approx(-info["distance"])
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], np.float32))
    assert terminated and info["is_success"] and not truncated
    # The goal image is the scene with the disc at the goal.
    env.reset(seed=0, options={"start": (0.5, 0.0), "goal": (0.5, 0.0)})
    assert np.array_equal(env.render(), env.unwrapped.goal_image())
    assert not np.array_equal(env.render(), np.full_like(env.render(), env.render()[0, 0]))

    env.reset(seed=0)
    truncated_at = []
    for t in range(50):
        _, _, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        assert not terminated
        if truncated:
            truncated_at.append(t)
    assert truncated_at == [49]


def test_goal_pixels_match_observation_at_goal():
    env = make_env(POINT_GOAL_ID, size=32)
    obs, info = env.reset(seed=0, options={"start": (0.3, -0.2), "goal": (0.3, -0.2)})
    assert info["goal_pixels"].shape == (3, 2, 32, 32)
    assert np.array_equal(obs, info["goal_pixels"])
    assert np.array_equal(env.goal_observation(), info["goal_pixels"])
