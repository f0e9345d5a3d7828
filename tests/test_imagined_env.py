"""Imagined gymnasium envs: the vector env equals E single imagined envs."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vjepa_agent import envs  # noqa: E402
from vjepa_agent.config import WorldModelConfig  # noqa: E402
from vjepa_agent.errors import UserError  # noqa: E402
from vjepa_agent.world_model import WorldModel  # noqa: E402

DISCRETE = {"type": "Discrete", "shape": [], "n": 2, "start": 0}
SPEC = {"env_id": "CartPole-v1", "obs": "state", "action_space": DISCRETE, "observation_shape": [4]}


def tiny_model() -> WorldModel:
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), SPEC).eval()
    torch.nn.init.normal_(wm.predictor.latent_out.weight, std=0.3)  # latents that move
    torch.nn.init.normal_(wm.predictor.action_in.weight, std=1.0)  # ... with the action
    return wm


def cartpole():
    return envs.make_env("CartPole-v1", obs="state")


def test_vector_env_equals_single_envs():
    wm, E, H, seed = tiny_model(), 3, 6, 11
    vec = wm.imagined_vector_env(cartpole(), E, max_episode_steps=100, termination_threshold=1.0)
    singles = [wm.imagined_env(cartpole(), termination_threshold=1.0) for _ in range(E)]
    assert vec.observation_space.shape == (E, 4) and vec.action_space.shape == (E,)
    obs, _ = vec.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_allclose(obs, np.stack(single_obs), atol=1e-6)
    actions = (np.arange(H)[:, None] // 2 + np.arange(E)) % 2  # (H, E), differing across envs
    for t in range(H):
        obs, rewards, terminated, truncated, info = vec.step(actions[t])
        steps = [env.step(int(a)) for env, a in zip(singles, actions[t])]
        np.testing.assert_allclose(obs, np.stack([s[0] for s in steps]), atol=1e-5)
        np.testing.assert_allclose(rewards, [s[1] for s in steps], atol=1e-5)
        probs = [s[4]["termination_probability"] for s in steps]
        np.testing.assert_allclose(info["termination_probability"], probs, atol=1e-5)
        assert not terminated.any() and not truncated.any()
    assert np.abs(obs - vec.reset(seed=seed)[0]).max() > 1e-3  # the latents did move


def test_vector_env_resets_done_envs_in_the_same_step():
    wm, E = tiny_model(), 2
    vec = wm.imagined_vector_env(cartpole(), E, termination_threshold=0.0)  # every step terminates
    single = wm.imagined_env(cartpole(), termination_threshold=0.0)
    vec.reset(seed=5)
    single.reset(seed=5)
    obs, _, terminated, _, info = vec.step(np.array([1, 0]))
    final, _, single_terminated, _, _ = single.step(1)
    assert terminated.all() and single_terminated and info["_final_obs"].all()
    np.testing.assert_allclose(info["final_obs"][0], final, atol=1e-5)
    # the new start latents encode real observations: CartPole starts within 0.05 of zero
    state = obs * wm.encoder.std.numpy() + wm.encoder.mean.numpy()
    assert np.abs(state).max() <= 0.05 + 1e-5


def test_vector_env_rejects_bad_input():
    with pytest.raises(UserError, match="num_envs"):
        tiny_model().imagined_vector_env(cartpole(), 0)
    vec = tiny_model().imagined_vector_env(cartpole(), 2)
    with pytest.raises(UserError, match="seeds for 2 envs"):
        vec.reset(seed=[1, 2, 3])
