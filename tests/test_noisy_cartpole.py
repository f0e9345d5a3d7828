"""NoisyCartPole: CartPole's dynamics exactly, with noise that is fresh in every rendered frame."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from vjepa_agent import envs
from vjepa_agent.errors import UserError


def test_registered_and_passes_check_env_without_warnings():
    env = gym.make(envs.NOISY_CARTPOLE_ID, render_mode="rgb_array")
    assert env.spec.max_episode_steps == 500
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)


def test_dynamics_equal_cartpole_for_the_same_actions():
    noisy = gym.make(envs.NOISY_CARTPOLE_ID, render_mode="rgb_array")
    clean = gym.make("CartPole-v1", render_mode="rgb_array")
    a, _ = noisy.reset(seed=3)
    b, _ = clean.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        np.testing.assert_array_equal(a, b)
        noisy.render()  # drawing noise must not touch the dynamics' random stream
        action = int(rng.integers(2))
        a, ra, ta, ua, _ = noisy.step(action)
        b, rb, tb, ub, _ = clean.step(action)
        assert (ra, ta, ua) == (rb, tb, ub)
        if ta or ua:
            a, _ = noisy.reset()
            b, _ = clean.reset()


def test_noise_is_independent_across_frames():
    env = envs.make_env(envs.NOISY_CARTPOLE_ID, obs="pixels", frame_stack=1, seed=0)
    env.reset(seed=0)
    frames = []
    for _ in range(120):
        env.unwrapped.state = np.zeros(4)  # the same scene every frame: what differs is the noise
        obs, *_ = env.step(0)
        frames.append(obs[0, 0].astype(np.float64))
    frames = np.stack(frames)  # (F, H, W)

    def lag1(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    # the flicker: one brightness per frame, uncorrelated from one frame to the next
    brightness = frames.mean(axis=(1, 2))
    assert abs(lag1(brightness[:-1], brightness[1:])) < 0.3
    assert brightness.std() > 1.0
    # the texture: with each frame's brightness divided out, pixels uncorrelated across frames
    texture = frames / brightness[:, None, None]
    texture = texture - texture.mean(0)
    assert abs(lag1(texture[:-1], texture[1:])) < 0.05
    assert (texture * brightness.mean()).std() > 5  # and there at the observation's resolution


def test_noise_zero_renders_cartpole_and_bad_strength_is_one_line():
    a = gym.make(envs.NOISY_CARTPOLE_ID, render_mode="rgb_array", noise=0.0)
    b = gym.make("CartPole-v1", render_mode="rgb_array")
    a.reset(seed=1)
    b.reset(seed=1)
    np.testing.assert_array_equal(a.render(), b.render())
    with pytest.raises(UserError, match=r"noise must be in \[0, 1\]"):
        gym.make(envs.NOISY_CARTPOLE_ID, noise=1.5)
