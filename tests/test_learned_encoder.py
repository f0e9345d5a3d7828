"""Learned pixel encoders (jepa, reconstruction): anti-collapse terms that can fail, gradients that
stay out of the target encoder, save/load for every latent kind, a tiny run that beats copy-last."""

import copy
import dataclasses
import json
import math

import pytest
import torch

from vjepa_agent import envs
from vjepa_agent.agent import LatentObjective
from vjepa_agent.config import EncoderConfig, WorldModelConfig
from vjepa_agent.errors import UserError
from vjepa_agent.train.world_model import (
    WindowSampler,
    anti_collapse_terms,
    learned_encoder_losses,
    sigreg,
    temporal_contrast,
    train_world_model,
)
from vjepa_agent.world_model import WorldModel

TINY = EncoderConfig(dim=32, depth=1, heads=2, patch_size=8, tubelet_size=2, pos_embed="sincos")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cp") / "data"
    envs.collect_rollouts(
        "CartPole-v1",
        800,
        out=out,
        obs="pixels",
        num_envs=4,
        seed=0,
        size=(16, 64),
        frame_stack=4,
        grayscale=True,
        progress=False,
        start_ranges=envs.starts.default_start_ranges("CartPole-v1"),
    )
    return out


def config(store_dir, tmp_path, **kw) -> WorldModelConfig:
    base = dict(
        data=store_dir,
        out=tmp_path / "wm",
        encoder=TINY,
        latent_dim=16,
        predictor_dim=32,
        steps=2,
        batch_size=4,
        seq_len=4,
        rollout_steps=4,
        log_every=1,
    )
    return WorldModelConfig(**{**base, **kw})


def test_each_anti_collapse_term_penalises_a_constant_latent():
    gen = torch.Generator().manual_seed(0)
    cfg = WorldModelConfig(
        variance_weight=1, covariance_weight=1, time_variance_weight=1, sigreg_weight=1
    )
    constant = torch.ones(8, 5, 16)  # (B, T, Z): every latent the same
    spread = torch.randn(8, 5, 16, generator=gen)  # independent N(0, 1) in every step and dim
    c, s = anti_collapse_terms(constant, cfg, gen), anti_collapse_terms(spread, cfg, gen)
    for name in ("variance", "time_variance", "sigreg"):
        assert float(c[name]) > 3 * float(s[name]) + 0.05, name
    # covariance: a latent whose dims all copy one number (rank 1) against independent dims
    rank1 = torch.randn(8, 5, 1, generator=gen).expand(8, 5, 16)
    assert float(anti_collapse_terms(rank1, cfg, gen)["covariance"]) > 10 * float(s["covariance"])
    # a latent that varies across windows but not within them fails the time-variance hinge only
    slow = torch.randn(8, 1, 16, generator=gen).expand(8, 5, 16)
    t = anti_collapse_terms(slow, cfg, gen)
    assert float(t["time_variance"]) > 0.25 and float(t["variance"]) < 0.3
    # SIGReg: constant about M / 2, Gaussian near 0
    assert float(sigreg(constant.flatten(0, 1), gen)) > 10 * float(
        sigreg(spread.flatten(0, 1), gen)
    )


def test_temporal_contrast_needs_each_step_told_apart():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(4, 6, 16, generator=gen)  # (B, K, Z)
    # a constant latent cannot pick its own target among B * K: ln(B * K)
    constant = torch.ones(4, 6, 16)
    assert float(temporal_contrast(constant, constant, 0.1)) == pytest.approx(
        math.log(24), rel=1e-5
    )
    # predictions equal to their targets score near 0; shifted one step within the window, they
    # pick a neighbour's target and score high
    assert float(temporal_contrast(target, target, 0.1)) < 0.05
    shifted = torch.roll(target, 1, dims=1)
    assert float(temporal_contrast(shifted, target, 0.1)) > 5
    # a latent that only tells windows apart (constant within each) is left with ln(K)
    per_window = target[:, :1].expand(4, 6, 16)
    assert float(temporal_contrast(per_window, per_window, 0.01)) == pytest.approx(
        math.log(6), rel=1e-3
    )


@pytest.mark.parametrize("kind", ["jepa", "reconstruction"])
def test_gradients_reach_the_student_not_the_target(store_dir, tmp_path, kind):
    cfg = config(
        store_dir,
        tmp_path,
        pixel_encoder=kind,
        sigreg_weight=0.1,
        time_variance_weight=1,
        contrast_weight=float(kind == "jepa"),
    )
    model = train_world_model(cfg, progress=False)[0].train()
    target = copy.deepcopy(model.encoder).requires_grad_(False)
    store = envs.collect.RolloutStore.open(store_dir)
    episodes = [e for e in store.episodes() if e.length >= 4]
    batch = WindowSampler(store, episodes, 4, "cpu").sample(4, torch.Generator().manual_seed(0))
    losses = learned_encoder_losses(model, target, batch, cfg, torch.Generator().manual_seed(1))
    losses["loss"].backward()
    assert all(p.grad is None for p in target.parameters())
    assert model.encoder.vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert (model.decoder is not None) == (kind == "reconstruction")


@pytest.mark.parametrize("kind", ["vit", "moments", "jepa", "reconstruction", "state", "keypoints"])
def test_save_load_round_trip_for_every_latent_kind(tmp_path, kind):
    keypoints = 4 if kind == "keypoints" else 0
    kind = "jepa" if keypoints else kind
    if kind == "state":
        env = dict(env_id="CartPole-v1", obs="state", observation_shape=[4])
    else:
        shape = [3, 4, 16, 64] if kind in ("vit", "moments") else [1, 4, 16, 64]
        env = dict(env_id="CartPole-v1", obs="pixels", observation_shape=[4], pixel_shape=shape)
    env["action_space"] = dict(type="Discrete", n=2)
    cfg = WorldModelConfig(
        encoder=TINY,
        latent_dim=16,
        pixel_encoder=kind if kind != "state" else "vit",
        keypoints=keypoints,
    )
    torch.manual_seed(0)
    wm = WorldModel(cfg, env).eval()
    for buf in wm.buffers():  # fitted statistics must round-trip too
        buf.add_(torch.rand_like(buf.float()).to(buf.dtype) if buf.is_floating_point() else 0)
    wm.save_pretrained(tmp_path / kind)
    back = WorldModel.from_pretrained(tmp_path / kind)
    assert back.cfg.pixel_encoder == cfg.pixel_encoder and type(back.encoder) is type(wm.encoder)
    assert back.cfg.keypoints == keypoints
    obs = (
        torch.randn(3, 4)
        if kind == "state"
        else torch.randint(0, 256, (3, *env["pixel_shape"]), dtype=torch.uint8)
    )
    a = torch.tensor([0, 1, 1])
    torch.testing.assert_close(back.encode(obs, a), wm.encode(obs, a))
    torch.testing.assert_close(back.predict(wm.encode(obs, a), a), wm.predict(wm.encode(obs, a), a))


def test_tiny_jepa_run_trains_saves_and_reports_the_readout(store_dir, tmp_path):
    """End to end at a tiny budget: the encoder moves, the summary holds finite held-out errors
    and the state readout. (Beating copy-last is not asserted: at this budget the learned latent
    does not, measured 1.36x at 1 step and 0.98x at 10 after 300 steps.)"""
    cfg = config(store_dir, tmp_path, pixel_encoder="jepa", steps=20, batch_size=8)
    torch.manual_seed(cfg.seed)
    before = WorldModel(cfg, _spec(store_dir))
    wm, summary = train_world_model(cfg, progress=False)
    assert summary["pixel_encoder"] == "jepa" and summary["world_size"] == 1
    w0, w1 = before.encoder.vit.patch_embed.proj.weight, wm.encoder.vit.patch_embed.proj.weight
    assert not torch.equal(w0, w1)  # the encoder learned
    for key in ("error_ratio_1", "error_ratio_10", "readout_r2_0", "readout_rmse_2"):
        assert math.isfinite(summary[key]), key
    assert "readout_theta_rmse_near" in summary and "readout_theta_rmse_far" in summary
    loaded = WorldModel.from_pretrained(cfg.out)
    assert loaded.learned_encoder


def test_frozen_phase_trains_predictor_and_heads_and_leaves_the_encoder(store_dir, tmp_path):
    """frozen_steps: after the encoder's steps, a fresh predictor and heads train alone on cached
    latents: the encoder ends as the encoder-only run left it, the predictor differs and
    predicts held-out latents better than after the encoder's steps (measured 0.24x; one more
    step alone: 0.85x), the log goes on past them."""
    base = dict(pixel_encoder="jepa", steps=20, batch_size=8, checkpoint_every=0)
    only, s0 = train_world_model(config(store_dir, tmp_path / "a", **base), progress=False)
    cfg = config(store_dir, tmp_path / "b", **base, frozen_steps=150, frozen_batch_size=16)
    wm, s1 = train_world_model(cfg, progress=False)
    for name, w in wm.encoder.state_dict().items():
        torch.testing.assert_close(w, only.encoder.state_dict()[name], rtol=0, atol=0, msg=name)
    assert not torch.equal(wm.predictor.latent_out.weight, only.predictor.latent_out.weight)
    assert s1["latent_error_1"] < 0.5 * s0["latent_error_1"], (
        s0["latent_error_1"],
        s1["latent_error_1"],
    )
    assert 0 < s1["encoder_train_seconds"] < s1["train_seconds"]
    steps = [
        json.loads(line)["step"] for line in (cfg.out / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps[-1] == 170 and steps == sorted(steps) and 20 in steps


def test_encoder_from_retrains_the_predictor_and_heads_of_a_trained_model(store_dir, tmp_path):
    """encoder_from + steps 0: the frozen phase alone on another run's encoder gives that run's
    weights bit for bit (the same seed); an encoder of other settings is a one-line error."""
    base = dict(pixel_encoder="jepa", batch_size=8, checkpoint_every=0, frozen_steps=30)
    source, _ = train_world_model(config(store_dir, tmp_path / "a", steps=20, **base), False)
    cfg = config(
        store_dir, tmp_path / "b", steps=0, encoder_from=str(tmp_path / "a" / "wm"), **base
    )
    again, summary = train_world_model(cfg, progress=False)
    for name, w in again.state_dict().items():
        torch.testing.assert_close(w, source.state_dict()[name], rtol=0, atol=0, msg=name)
    assert summary["steps"] == 0
    with pytest.raises(UserError, match=r"has another encoder: latent_dim 16 \(this run: 8\)$"):
        train_world_model(dataclasses.replace(cfg, latent_dim=8), progress=False)
    with pytest.raises(UserError, match="0 only with encoder_from"):
        dataclasses.replace(cfg, encoder_from=None).validate()


def test_frozen_steps_need_a_learned_encoder(store_dir, tmp_path):
    with pytest.raises(UserError, match="fixed already"):
        config(store_dir, tmp_path, pixel_encoder="moments", frozen_steps=10).validate()


def _spec(store_dir):
    from vjepa_agent.data.rollouts import RolloutStore
    from vjepa_agent.train.world_model import env_spec_from_store

    return env_spec_from_store(RolloutStore.open(store_dir))


def test_learned_encoder_rejects_token_latents(store_dir, tmp_path):
    with pytest.raises(UserError, match="learns one compact latent"):
        config(store_dir, tmp_path, pixel_encoder="jepa", latent="tokens").validate()


def test_termination_logit_objective_prefers_states_farther_from_failure():
    env = dict(
        env_id="CartPole-v1",
        obs="state",
        observation_shape=[4],
        action_space=dict(type="Discrete", n=2),
    )
    wm = WorldModel(WorldModelConfig(), env)
    with torch.no_grad():  # a termination head whose logit is the latent's third component
        for layer in wm.termination_head:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        wm.termination_head[0].weight[0, 2] = 1.0
        wm.termination_head[2].weight[0, 0] = 1.0
        wm.termination_head[4].weight[0, 0] = 1.0
    objective = LatentObjective(termination_logit_weight=1.0, reward_weight=0.0)
    safe, risky = torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4)
    risky[..., 2] = 2.0  # higher termination logits all along
    assert float(objective(wm, safe)[0, 0]) < float(objective(wm, risky)[0, 0])


@pytest.mark.slow
def test_two_process_training_keeps_identical_weights_on_both_ranks(
    store_dir, tmp_path, run_script
):
    """A real two-process Accelerate (DDP, CPU) run of train_world_model.py with a jepa encoder."""
    import json

    args = ["--data", store_dir, "--out", tmp_path / "ddp", "--pixel-encoder", "jepa"]
    args += "--steps 3 --batch-size 4 --seq-len 4 --rollout-steps 4 --latent-dim 16".split()
    args += "--encoder.dim 32 --encoder.depth 1 --encoder.heads 2 --log-every 1".split()
    run_script("train_world_model.py", *args, processes=2, timeout=300)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    a, b = summary["rank_weight_sums"]
    assert a == b


def test_random_shift_moves_each_stack_whole_and_repeats_the_edges():
    from vjepa_agent.train.world_model import random_shift

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 255, (6, 5, 1, 3, 8, 16), dtype=torch.uint8, generator=g)
    assert torch.equal(random_shift(frames, (0, 0), g), frames)
    out = random_shift(frames, (2, 4), g)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    moved = 0
    for b in range(6):
        for k in range(5):
            x, y = frames[b, k], out[b, k]  # (C, T, H, W)
            # find the offset that explains this stack: every frame of it moved by the same one
            fits = [
                (dy, dx)
                for dy in range(-2, 3)
                for dx in range(-4, 5)
                if torch.equal(
                    y,
                    x[..., (torch.arange(8) + dy).clamp(0, 7), :][
                        ..., (torch.arange(16) + dx).clamp(0, 15)
                    ],
                )
            ]
            assert len(fits) == 1, (b, k)
            moved += fits[0] != (0, 0)
    assert moved >= 20  # nearly every one of the 30 stacks draws its own offset


def test_a_model_saved_with_a_removed_pooling_gets_one_line():
    import dataclasses

    from vjepa_agent.config import WorldModelConfig
    from vjepa_agent.errors import UserError
    from vjepa_agent.world_model import _config_from_dict

    saved = dataclasses.asdict(WorldModelConfig(pixel_encoder="jepa"))
    assert _config_from_dict({**saved, "pooling": "meanmax"}).pixel_encoder == "jepa"
    with pytest.raises(UserError, match="pooling flatten"):
        _config_from_dict({**saved, "pooling": "flatten"})


def test_keypoints_sit_where_the_tokens_point_finer_than_the_patch_grid():
    """A keypoint is the softmax-weighted centre of the tokens plus each token's offset: one
    token that wins the softmax puts it on that token's centre, its offset moves it within the
    patch, and two tokens that share the weight put it between them."""
    from vjepa_agent.world_model import LearnedPixelEncoder

    enc = LearnedPixelEncoder(TINY, (1, 4, 16, 64), 8, "layernorm", keypoints=1)  # grid (2, 2, 8)
    with torch.no_grad():
        enc.kp_logits.weight.zero_()
        enc.kp_logits.bias.zero_()
        enc.kp_logits.weight[0, 0] = 100.0  # the logit is 100 x the token's first feature
        enc.kp_offset.weight.zero_()
        enc.kp_offset.bias.zero_()
        enc.kp_offset.weight[0, 1] = 10.0  # x offset: 0.5 tanh(10 x the second feature)
        tokens = torch.zeros(1, 32, 32)  # (B, T' H' W', D)
        tokens[0, 5, 0] = 1.0  # slice 0, row 0, column 5
        tokens[0, 16 + 8 + 2, 0] = 1.0  # slice 1, row 1, column 2
        kp = enc.keypoint_coords(tokens)  # (1, 2, 1, 2), (x, y) from the grid's centre
        torch.testing.assert_close(kp[0, :, 0], torch.tensor([[1.5, -0.5], [-1.5, 0.5]]))
        tokens[0, 5, 1] = 1.0  # that token's offset: half a patch to the right
        assert abs(float(enc.keypoint_coords(tokens)[0, 0, 0, 0]) - 2.0) < 1e-3
        tokens[0, 5, 1] = 0.0
        tokens[0, 6, 0] = 1.0  # two winning tokens share the weight: halfway between them
        assert abs(float(enc.keypoint_coords(tokens)[0, 0, 0, 0]) - 2.0) < 1e-3
        z = enc(torch.randint(0, 256, (3, 1, 4, 16, 64), dtype=torch.uint8))
    assert z.shape == (3, 8) and enc.proj.in_features == 2 * 32 + 2 * (2 * 2 - 1)
