"""The pixel-model diagnostic: the state probe, held-out and closed-loop errors, real CartPole."""

import json

import pytest
import torch

from vjepa_agent import envs
from vjepa_agent.config import DiagnoseConfig, WorldModelConfig
from vjepa_agent.errors import UserError
from vjepa_agent.latent_diagnostics import POSITION_BINS, fit_state_probe, run_diagnose
from vjepa_agent.train.world_model import train_world_model


def test_state_probe_recovers_a_function_of_the_latent():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 8, generator=g)
    states = torch.stack([z[:, 0] * 3 + 1, z[:, 1] ** 2, torch.tanh(z[:, 2]) * 0.1], 1)
    probe = fit_state_probe(z[:3000], states[:3000], steps=1500)
    rms = (probe(z[3000:]) - states[3000:]).pow(2).mean(0).sqrt()
    assert (rms < 0.2 * states.std(0)).all(), rms


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("diag")
    common = dict(num_envs=2, seed=0, progress=False)
    envs.collect_rollouts("CartPole-v1", 300, out=root / "pix", size=32, frame_stack=4, **common)
    envs.collect_rollouts("CartPole-v1", 300, out=root / "state", obs="state", **common)
    for name, extra in (("pix", dict(latent_dim=16)), ("state", {})):
        cfg = WorldModelConfig(
            data=root / name, out=root / f"{name}-wm", steps=20, batch_size=8, **extra
        )
        train_world_model(cfg, progress=False)
    return root


def test_diagnose_writes_probe_and_closed_loop_errors(models, tmp_path):
    cfg = DiagnoseConfig(
        model=models / "pix-wm",
        data=models / "pix",
        state_model=models / "state-wm",
        episodes=1,
        max_episode_steps=12,
        probe_steps=50,
        out=tmp_path / "diag",
    )
    s = run_diagnose(cfg)
    assert json.loads((tmp_path / "diag" / "summary.json").read_text()) == s
    for key in ("encoded", "imagined_1", "imagined_5", "imagined_10"):
        assert len(s["probe_rms"][key]) == 4
        assert all(0 < v < float("inf") for v in s["probe_rms"][key])
    for kind in ("closed_loop_probe", "closed_loop_noise"):
        run = s[kind]
        assert len(run["returns"]) == 1 and 1 <= run["returns"][0] <= 12
        steps = sum(b["steps"] for b in run["rms_by_position"])
        assert steps == run["returns"][0]  # CartPole: +1 per step, each step's error counted once
        assert all(b["from"] in POSITION_BINS for b in run["rms_by_position"])
    # action effect: k steps of push-right minus push-left; CartPole's physics (explicit Euler,
    # force 10 N) turns the pole back by about 0.0117 rad after 2 steps and 0.0703 after 4, moves
    # the cart right, and does nothing to the position at k = 1 (not asked)
    spectrum = s["latent_spectrum"]
    shares = spectrum["variance_share"]
    assert shares == sorted(shares, reverse=True) and 0.5 < sum(shares) <= 1.001
    assert 0 < sum(spectrum["prediction_share"]) <= 1.001
    for key in ("r2_state_linear", "r2_state_cubic", "r2_periodic"):
        assert len(spectrum[key]) == len(shares) and all(r <= 1 for r in spectrum[key])
    effect = s["action_effect"]
    assert effect["actions"] == [0, 1]
    assert effect["true_2"][2] == pytest.approx(-0.0117, abs=0.002)
    assert effect["true_4"][2] == pytest.approx(-0.0703, abs=0.005)
    assert effect["true_8"][0] > 0
    for k in (2, 4, 8):
        assert len(effect[f"imagined_{k}"]) == 4
        assert all(0 <= v <= 1 for v in effect[f"sign_agreement_{k}"])
    # the noisy run draws Gaussian noise of the held-out RMS: its error is of that size
    ratio = torch.tensor(s["closed_loop_noise"]["rms"]) / torch.tensor(s["probe_rms"]["encoded"])
    assert ((ratio > 0.3) & (ratio < 2.5)).all(), ratio


def test_diagnose_refuses_a_state_model_or_other_data(models, tmp_path):
    with pytest.raises(UserError, match="is not a pixel world model"):
        run_diagnose(DiagnoseConfig(model=models / "state-wm", data=models / "pix", out=tmp_path))
    envs.collect_rollouts("Pendulum-v1", 40, out=tmp_path / "pend", obs="state", progress=False)
    with pytest.raises(UserError, match="holds Pendulum-v1 rollouts"):
        run_diagnose(DiagnoseConfig(model=models / "pix-wm", data=tmp_path / "pend", out=tmp_path))


def test_best_period_finds_a_feature_periodic_in_the_position():
    from vjepa_agent.latent_diagnostics import _held_out_r2, best_period, periodic

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3000, generator=g, dtype=torch.float64) * 4.8 - 2.4
    noise = lambda: 0.1 * torch.randn(3000, generator=g, dtype=torch.float64)  # noqa: E731
    y = torch.stack([torch.sin(2 * torch.pi * x / 0.15) + noise(), x + noise()], 1)
    train, held = torch.arange(2400), torch.arange(2400, 3000)
    period = best_period(y[:, :1], x, train, held)
    assert period == pytest.approx(0.15, rel=0.005)
    r2 = _held_out_r2(periodic(x, period), y, train, held)
    assert r2[0] > 0.95 and r2[1] < 0.05  # the periodic column, not the linear one
