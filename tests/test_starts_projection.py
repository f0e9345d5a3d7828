"""Exploring starts for collection, and a frozen-ViT world model trained on such data."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from vjepa_agent.envs.starts import ExploringStarts

from vjepa_agent import envs
from vjepa_agent.config import EncoderConfig, WorldModelConfig
from vjepa_agent.data.rollouts import RolloutStore
from vjepa_agent.errors import UserError
from vjepa_agent.world_model import WorldModel

TINY_ENC = EncoderConfig(dim=32, depth=1, heads=2, patch_size=8, tubelet_size=2, pos_embed="sincos")


def test_exploring_starts_draw_the_state_and_keep_the_observation_in_step():
    env = ExploringStarts(gym.make("CartPole-v1"), {0: (-1.5, 1.5)})
    xs = []
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        np.testing.assert_allclose(obs, env.unwrapped.state, rtol=1e-6)  # obs is the new state
        assert obs.dtype == np.float32
        xs.append(obs[0])
        assert abs(obs[2]) <= 0.05  # the other components keep the env's own draw
    xs = np.array(xs)
    assert np.all(np.abs(xs) <= 1.5) and xs.max() - xs.min() > 1.5  # CartPole alone: |x| <= 0.05
    assert env.reset(seed=3)[0][0] == xs[3]  # seeded
    obs, *_ = env.step(0)
    assert abs(obs[0] - xs[3]) < 0.05  # the episode continues from the drawn state


def test_whole_state_spread_draws_every_component():
    ranges = envs.starts.default_start_ranges("CartPole-v1", "state")
    env = ExploringStarts(gym.make("CartPole-v1"), ranges)
    starts = np.array([env.reset(seed=seed)[0] for seed in range(40)])
    for i, (low, high) in ranges.items():
        assert starts[:, i].min() >= low and starts[:, i].max() <= high, i
        assert starts[:, i].max() - starts[:, i].min() > 0.6 * (high - low), i
    assert set(ranges) == {0, 1, 2, 3}


def test_collect_script_spreads_the_whole_state(tmp_path, run_script):
    args = ["--env", "CartPole-v1", "--obs", "state", "--steps", "40", "--exploring-starts"]
    run_script("collect_rollouts.py", *args, "--start-spread", "state", "--out", tmp_path / "d")
    store = RolloutStore.open(tmp_path / "d")
    assert sorted(store.meta["start_ranges"]) == ["0", "1", "2", "3"]
    first = store.data["observation"][store.data["step"] == 0]
    assert first[:, 3].abs().max() > 0.3  # the env's own resets keep |omega| <= 0.05


@pytest.mark.parametrize(
    "make, ranges, message",
    [
        (lambda: gym.make("CartPole-v1"), {0: (1.0, -1.0)}, "low <= high"),
        (lambda: gym.make("CartPole-v1"), {7: (0.0, 1.0)}, "outside"),
        (lambda: gym.make(envs.POINT_GOAL_ID), {0: (0.0, 1.0)}, "has none"),
    ],
)
def test_exploring_starts_bad_ranges_are_one_line_errors(make, ranges, message):
    env = make()
    env.reset(seed=0)
    with pytest.raises(UserError, match=message):
        ExploringStarts(env, ranges)


def test_exploring_starts_data_and_a_frozen_vit_model_round_trip(tmp_path):
    data = tmp_path / "data"
    envs.collect_rollouts(
        "CartPole-v1", 400, out=data, size=32, frame_stack=2, seed=0, progress=False,
        start_ranges={0: (-1.0, 1.0)},
    )  # fmt: skip
    store = RolloutStore.open(data)
    first = store.data["observation"][store.data["step"] == 0]
    assert first[:, 0].abs().max() > 0.3  # episodes start across the track
    assert store.meta["start_ranges"] == {"0": [-1.0, 1.0]}
    from vjepa_agent.train.world_model import train_world_model

    cfg = WorldModelConfig(
        data=data, out=tmp_path / "wm", encoder=TINY_ENC, latent_dim=8,
        predictor_dim=32, predictor_depth=1, steps=40, eval_horizon=5, batch_size=8,
    )  # fmt: skip
    torch.manual_seed(0)
    untrained = WorldModel(cfg, json.loads(json.dumps(_spec(store))))
    wm, summary = train_world_model(cfg, progress=False)
    assert np.isfinite(summary["latent_error_1"])
    # the ViT stays frozen; the latent is its tokens' PCA (8 dims) + 2 previous-action dims
    torch.testing.assert_close(untrained.encoder.vit.state_dict(), wm.encoder.vit.state_dict())
    obs = store.data["pixels"][:16]
    prev = store.data["action"][:16]
    z = wm.encode(obs, prev)
    assert z.shape == (16, 10)
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    torch.testing.assert_close(loaded.encode(obs, prev), z)
    # folders trained with the options this version dropped are a one-line error, not a
    # model that silently encodes another way
    meta_path = tmp_path / "wm" / "config.json"
    meta = json.loads(meta_path.read_text())
    for extra in ({"pca_dim": 48}, {"encoder_mode": "ema"}):
        meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], **extra}}))
        with pytest.raises(UserError, match="retrain it"):
            WorldModel.from_pretrained(tmp_path / "wm")
    meta_path.write_text(
        json.dumps({**meta, "config": {**meta["config"], "pca_dim": 0, "encoder_mode": "frozen"}})
    )
    torch.testing.assert_close(WorldModel.from_pretrained(tmp_path / "wm").encode(obs, prev), z)


def _spec(store):
    from vjepa_agent.train.world_model import env_spec_from_store

    return env_spec_from_store(store)


@pytest.mark.slow
def test_plan_pixels_collects_with_exploring_starts(tmp_path, run_script):
    """plan.py pixels end to end at a tiny budget: spread starts in the data, a ViT model."""
    out = tmp_path / "run"
    args = "--collect-steps 300 --train-steps 20 --pixel-encoder vit"
    args += " --exploring-starts True"
    args += " --episodes 1"
    args += " --max-episode-steps 10 --horizon 2 --samples 4 --elites 1 --iterations 1 --no-video"
    run_script("plan.py", "--env", "CartPole-v1", "--out", out, *args.split())
    store = RolloutStore.open(out / "data")
    first = store.data["observation"][store.data["step"] == 0]
    assert first[:, 0].abs().max() > 0.3 and store.meta["start_ranges"] == {"0": [-1.5, 1.5]}
    cfg = WorldModel.from_pretrained(out / "model").cfg
    assert cfg.pixel_encoder == "vit"
    s = json.loads((out / "summary.json").read_text())
    assert len(s["returns"]) == 1 and 1 <= s["returns"][0] <= 10


def test_collect_script_exploring_starts_without_ranges_is_one_line(tmp_path, run_script):
    args = ["--env", "Pendulum-v1", "--obs", "state", "--steps", "10", "--exploring-starts"]
    proc = run_script("collect_rollouts.py", *args, "--out", tmp_path / "d", check=False)
    assert proc.returncode == 2 and "no start ranges for Pendulum-v1" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d").exists()
