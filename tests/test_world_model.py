"""The action-conditioned predictor, WorldModel API, adapters, training on real rollouts."""

import json

import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

from vjepa_agent import envs
from vjepa_agent.config import EncoderConfig, WorldModelConfig
from vjepa_agent.data.rollouts import RolloutStore
from vjepa_agent.errors import UserError
from vjepa_agent.models.ac_predictor import ACPredictor, block_causal_mask
from vjepa_agent.world_model import WorldModel

# flags of a ~20k-parameter pixel world model for subprocess runs
TINY_WM_FLAGS = ["--encoder.dim", "32", "--encoder.depth", "1", "--encoder.heads", "2"]
TINY_WM_FLAGS += ["--predictor-dim", "32", "--predictor-depth", "1", "--eval-horizon", "5"]
TINY_ENC = EncoderConfig(dim=32, depth=1, heads=2, patch_size=8, tubelet_size=2, pos_embed="sincos")
DISCRETE = {"type": "Discrete", "shape": [], "n": 2, "start": 0}
BOX = {"type": "Box", "shape": [1], "dtype": "float32", "low": [-2.0], "high": [2.0]}


def pixel_spec(action=DISCRETE):
    return {
        "env_id": "CartPole-v1",
        "obs": "pixels",
        "action_space": action,
        "observation_shape": [4],
        "pixel_shape": [3, 2, 32, 32],
    }


def state_spec(action=DISCRETE):
    return {
        "env_id": "CartPole-v1",
        "obs": "state",
        "action_space": action,
        "observation_shape": [4],
    }


def test_block_causal_mask():
    m = block_causal_mask(3, 2)
    assert m.shape == (6, 6)
    assert m[0, 1] and m[1, 0]  # same step: both ways
    assert not m[1, 2] and m[2, 1]  # step 0 cannot see step 1; step 1 sees step 0


@pytest.mark.parametrize("tokens,fuse", [(4, False), (1, True)])
def test_future_actions_do_not_change_past_predictions(tokens, fuse):
    torch.manual_seed(0)
    pred = ACPredictor(
        latent_dim=8,
        action_dim=3,
        tokens_per_frame=tokens,
        dim=32,
        depth=2,
        heads=4,
        fuse_action=fuse,
    ).eval()
    torch.nn.init.normal_(pred.latent_out.weight, std=0.1)  # not the zero init, so outputs vary
    z = torch.randn(2, 5, tokens, 8)
    a = torch.randn(2, 5, 3)
    out = pred(z, a)
    a2 = a.clone()
    a2[:, 3:] = torch.randn(2, 2, 3)  # change the actions of steps 3 and 4
    out2 = pred(z, a2)
    torch.testing.assert_close(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3:], out2[:, 3:])
    z2 = z.clone()
    z2[:, 4] += 1.0  # a future latent must not change earlier predictions either
    torch.testing.assert_close(pred(z2, a)[:, :4], out[:, :4])


def test_single_token_attention_is_its_value_projection():
    from vjepa_agent.models.layers import Attention

    torch.manual_seed(0)
    attn = Attention(32, heads=4)
    x = torch.randn(5, 1, 32)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    full = attn.proj(
        F.scaled_dot_product_attention(
            q.view(5, 1, 4, 8).transpose(1, 2),
            k.view(5, 1, 4, 8).transpose(1, 2),
            v.view(5, 1, 4, 8).transpose(1, 2),
        )
        .transpose(1, 2)
        .reshape(5, 1, 32)
    )
    torch.testing.assert_close(attn(x), full)


@pytest.mark.parametrize("latent", ["compact", "tokens"])
@pytest.mark.parametrize("action", [DISCRETE, BOX])
def test_pixel_world_model_shapes(latent, action):
    cfg = WorldModelConfig(
        encoder=TINY_ENC, latent=latent, latent_dim=16, predictor_dim=32, predictor_depth=1
    )
    wm = WorldModel(cfg, pixel_spec(action)).eval()
    frames = torch.randint(0, 256, (3, 3, 2, 32, 32), dtype=torch.uint8)
    z = wm.encode(frames)
    # compact latents end with the previous action's features (2 one-hot or 1 scaled value)
    lat = (16 + (2 if action is DISCRETE else 1),) if latent == "compact" else (16, 32)
    assert z.shape == (3, *lat) and torch.isfinite(z).all()
    acts = torch.randint(0, 2, (3, 5, 7)) if action is DISCRETE else torch.rand(3, 5, 7, 1) * 4 - 2
    traj = wm.rollout(z[:, None], acts)  # 5 samples per start latent, horizon 7
    assert traj.shape == (3, 5, 7, *lat)
    one = wm.predict(z, acts[:, 0, 0])
    torch.testing.assert_close(one, traj[:, 0, 0])
    if latent == "compact":
        # after a reset the previous action is zeros; a rollout carries the action it applied
        assert (z[:, 16:] == 0).all()
        torch.testing.assert_close(traj[:, 0, 0, 16:], wm.action_features(acts[:, 0, 0]))
        after = wm.encode(frames, acts[:, 0, 0])
        torch.testing.assert_close(after[:, 16:], wm.action_features(acts[:, 0, 0]))
        torch.testing.assert_close(wm.observation_part(after), wm.observation_part(z))
    assert wm.reward(traj).shape == (3, 5, 7)
    p = wm.termination(traj)
    assert p.shape == (3, 5, 7) and ((p >= 0) & (p <= 1)).all()


def _module_rollout(wm, z, acts):
    """The reference rollout: the predictor's forward, one step at a time, on every sequence."""
    lead = torch.broadcast_shapes(z.shape[:-1], acts.shape[:-1])
    zz = z.expand(*lead, z.shape[-1]).reshape(-1, z.shape[-1])
    feats = wm.action_features(acts.expand(*lead, acts.shape[-1]).reshape(-1, acts.shape[-1]))
    steps = []
    for k in range(feats.shape[1]):
        zz = wm.with_prev_action(
            wm.predictor(zz[:, None, None], feats[:, k : k + 1])[:, 0, 0], feats[:, k]
        )
        steps.append(zz)
    return torch.stack(steps, 1).reshape(*lead, feats.shape[1], -1)


@pytest.mark.parametrize("spec", [pixel_spec(), state_spec()], ids=["pixels", "state"])
def test_planning_rollout_equals_the_predictor_step_by_step(spec):
    """Planning's rollout (the folded Markov step on each distinct action prefix once) gives what
    the predictor's forward gives on every sequence, with and without gradients."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(encoder=TINY_ENC, latent_dim=16, predictor_dim=32, predictor_depth=2)
    wm = WorldModel(cfg, spec).eval()
    for m in wm.predictor.modules():  # away from the init (zero output layer, unit norms)
        for p in m.parameters(recurse=False):
            p.data.normal_(0, 0.3)
    z = torch.randn(3, 1, wm.latent_shape[0])  # 3 envs, their samples share the start latent
    acts = torch.randint(0, 2, (3, 64, 8))
    acts[:, :32, :3] = 1  # half of each env's samples share a 3-step prefix
    with torch.no_grad():
        ref = _module_rollout(wm, z, acts)
        fast = wm.rollout(z, acts)
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
        assert (fast[:, :, 0] - z).abs().max() > 0.1  # the predictor moves the latent
    torch.testing.assert_close(wm.rollout(z, acts), ref, atol=1e-5, rtol=1e-5)  # with gradients
    # one start per sequence (training's rollout) takes the plain loop, and agrees too
    z_each = torch.randn(3, 64, wm.latent_shape[0])
    with torch.no_grad():
        torch.testing.assert_close(
            wm.rollout(z_each, acts), _module_rollout(wm, z_each, acts), atol=1e-5, rtol=1e-5
        )
        # plain=True (the planning benchmark's reference) is the module loop itself
        torch.testing.assert_close(wm.rollout(z, acts, plain=True), ref, atol=1e-6, rtol=1e-6)


def test_save_load_round_trip_and_strictness(tmp_path):
    torch.manual_seed(0)
    wm = WorldModel(
        WorldModelConfig(encoder=TINY_ENC, latent_dim=16, predictor_dim=32), pixel_spec()
    ).eval()
    wm.save_pretrained(tmp_path / "wm")
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    frames = torch.randint(0, 256, (2, 3, 2, 32, 32), dtype=torch.uint8)
    acts = torch.randint(0, 2, (2, 4))
    torch.testing.assert_close(
        loaded.rollout(loaded.encode(frames), acts), wm.rollout(wm.encode(frames), acts)
    )
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (tmp_path / "wm").iterdir())
    # a folder whose weights do not match its config is an error, never a partial load
    other = WorldModel(
        WorldModelConfig(encoder=TINY_ENC, latent_dim=8, predictor_dim=32), pixel_spec()
    )
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "wm" / "model.safetensors").write_bytes(
        (tmp_path / "other" / "model.safetensors").read_bytes()
    )
    with pytest.raises(UserError, match="does not match the model"):
        WorldModel.from_pretrained(tmp_path / "wm")
    with pytest.raises(UserError, match="does not exist"):
        WorldModel.from_pretrained(tmp_path / "missing")


def test_unsupported_action_space():
    with pytest.raises(UserError, match="cannot be embedded"):
        WorldModel(WorldModelConfig(), state_spec({"type": "MultiBinary", "shape": [3]}))


def test_tensordict_module_and_imagined_env():
    from tensordict import TensorDict

    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), state_spec()).eval()
    module = wm.as_tensordict_module()
    td = TensorDict(
        {"latent": torch.randn(5, 4), "action": torch.randint(0, 2, (5,))}, batch_size=[5]
    )
    out = module(td)
    torch.testing.assert_close(out["next", "latent"], wm.predict(td["latent"], td["action"]))
    env = wm.imagined_env(envs.make_env("CartPole-v1", obs="state"), max_episode_steps=20)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    obs2, reward, terminated, truncated, info = env.step(1)
    assert (
        obs2.shape == (4,)
        and isinstance(reward, float)
        and 0 <= info["termination_probability"] <= 1
    )


@pytest.mark.slow
def test_collect_train_beats_copy_last(tmp_path, run_script):
    """A tiny end-to-end run on real CartPole pixels: the model must beat 'repeat the last latent'."""
    data = tmp_path / "data"
    run_script(
        "collect_rollouts.py",
        "--env",
        "CartPole-v1",
        "--steps",
        "1200",
        "--size",
        "32",
        "--out",
        data,
    )
    out = tmp_path / "wm"
    proc = run_script(
        "train_world_model.py",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "150",
        *TINY_WM_FLAGS,
        "--latent-dim",
        "32",
    )
    assert proc.stdout.strip().splitlines()[-1] == str(out / "summary.json")
    s = json.loads((out / "summary.json").read_text())
    assert s["env_steps"] == 1200
    assert s["latent_error_1"] < s["copy_last_error_1"]
    assert s["latent_error_5"] < s["copy_last_error_5"]
    assert 0.5 < s["termination_auc"] <= 1.0
    wm = WorldModel.from_pretrained(out)
    # the default 4-frame stacks
    assert wm.env["obs"] == "pixels" and wm.env["pixel_shape"] == [3, 4, 32, 32]
    # cached training latents end with the action taken before each observation (zeros after a
    # reset), next latents with the action that led to them
    from vjepa_agent.train.world_model import cache_latents

    store = RolloutStore.open(data)
    cache = cache_latents(wm, store, "cpu")
    action, step = store.data["action"], store.data["step"]
    onehot = torch.nn.functional.one_hot(action, 2).float()
    torch.testing.assert_close(cache["next", "latent"][:, -2:], onehot)
    torch.testing.assert_close(cache["latent"][1:, -2:], onehot[:-1] * (step[1:, None] > 0))
    assert (cache["latent"][step == 0, -2:] == 0).all()
    # the same store is a video source for JEPA pretraining, whose encoder then seeds a world model
    pre = tmp_path / "pre"
    run_script(
        "pretrain_video.py",
        "--data",
        str(data),
        "--out",
        str(pre),
        "--max-steps",
        "3",
        "--frames-per-clip",
        "4",
        "--crop-size",
        "32",
        "--batch-size",
        "4",
        "--encoder.dim",
        "32",
        "--encoder.depth",
        "1",
        "--encoder.heads",
        "2",
        "--encoder.patch-size",
        "8",
        "--encoder.pos-embed",
        "sincos",
    )
    run_script(
        "train_world_model.py",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "wm2"),
        "--steps",
        "5",
        "--encoder-init",
        str(pre),
        *TINY_WM_FLAGS,
        "--latent-dim",
        "16",
    )
    # a store from another env is refused with one line
    args = ["--data", tmp_path / "nope", "--out", tmp_path / "x"]
    proc = run_script("train_world_model.py", *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_state_world_model_is_accurate(tmp_path):
    """State CartPole: the learned dynamics beat copy-last by far at 1 and 10 steps; termination AUC high."""
    from vjepa_agent.train.world_model import train_world_model

    envs.collect_rollouts("CartPole-v1", 3000, out=tmp_path / "data", obs="state", progress=False)
    cfg = WorldModelConfig(data=tmp_path / "data", out=tmp_path / "wm", steps=300, predictor_dim=32)
    threads = torch.get_num_threads()
    _, s = train_world_model(cfg, progress=False)
    assert torch.get_num_threads() == threads  # the loop's single thread is given back
    assert s["latent_error_1"] < 0.25 * s["copy_last_error_1"]
    assert s["latent_error_10"] < 0.5 * s["copy_last_error_10"]
    assert s["termination_auc"] > 0.9
    # the failure head ranks held-out states by how soon their episode fails
    assert s["failure_auc_10_steps"] > 0.8


def test_failure_target_is_a_capped_logit_of_steps_to_failure():
    from vjepa_agent.train.world_model import failure_target

    cfg = WorldModelConfig(failure_discount=0.9)
    k = torch.tensor([0.0, 1.0, 5.0, 29.0, 30.0, 31.0, float("inf")])
    y = failure_target(k, cfg)
    p = 0.9 ** torch.tensor([0.0, 1.0, 5.0, 29.0, 30.0])
    assert y[0] > 10  # failing now: logit of ~1
    torch.testing.assert_close(y[1:5], torch.log(p[1:] / (1 - p[1:])))
    assert (y[1:5].diff() < 0).all()  # later failure, lower logit
    assert y[5] == y[4] == y[6]  # capped at 3 / (1 - discount) = 30 steps; never failing = the cap
    with pytest.raises(UserError, match="failure_discount"):
        WorldModelConfig(failure_discount=1.0).validate()


def test_heads_do_not_steer_the_predictor():
    """Head losses train the heads only: the predictor's gradient is that of the latent losses."""
    from tensordict import TensorDict

    from vjepa_agent.train.world_model import world_model_losses

    torch.manual_seed(0)
    b, t = 4, 5
    cfgs = [WorldModelConfig(predictor_dim=32, predictor_depth=1)]
    cfgs.append(
        WorldModelConfig(
            predictor_dim=32,
            predictor_depth=1,
            termination_weight=0.0,
            reward_weight=0.0,
            failure_weight=0.0,
        )
    )
    model = WorldModel(cfgs[0], state_spec())
    batch = TensorDict(
        {
            "action": torch.randint(2, (b, t)),
            "steps_to_termination": torch.tensor([[4.0, 3, 2, 1, 0]]).expand(b, t),
            "next": {
                "terminated": torch.zeros(b, t, 1, dtype=torch.bool),
                "reward": torch.ones(b, t, 1),
            },
        },
        batch_size=[b, t],
    )
    z, target = torch.randn(b, t, 4), torch.randn(b, t, 4)
    grads = []
    for cfg in cfgs:
        model.zero_grad()
        world_model_losses(model, z, target, batch, cfg)["loss"].backward()
        grads.append([p.grad.clone() for p in model.predictor.parameters()])
        assert cfg.failure_weight == 0 or model.failure_head[0].weight.grad.abs().sum() > 0
    for with_heads, without in zip(*grads):
        torch.testing.assert_close(with_heads, without)


def _loss_batch(b: int, t: int, generator: torch.Generator):
    from tensordict import TensorDict

    return TensorDict(
        {
            "action": torch.randint(2, (b, t), generator=generator),
            "steps_to_termination": torch.randint(0, 40, (b, t), generator=generator).float(),
            "next": {
                "terminated": torch.rand(b, t, 1, generator=generator) < 0.2,
                "reward": torch.rand(b, t, 1, generator=generator),
                "latent": torch.randn(b, t, 4, generator=generator),
            },
        },
        batch_size=[b, t],
    )


def test_world_model_losses_heads_equal_the_terms_written_out():
    """Each head loss is the mean of its loss on the (detached) predictions and its loss on the
    encoded transitions drawn for the heads, written out here term by term."""
    import torch.nn.functional as F

    from vjepa_agent.train.world_model import failure_target, world_model_losses

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cfg = WorldModelConfig(predictor_dim=32, predictor_depth=1, failure_weight=0.5)
    model = WorldModel(cfg, state_spec())
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    batch, rows = _loss_batch(4, 5, g), _loss_batch(20, 1, g).reshape(20)
    z, target = torch.randn(4, 5, 4, generator=g), torch.randn(4, 5, 4, generator=g)
    losses = world_model_losses(model, z, target, batch, cfg, rows)
    pred = model.predict_sequence(z, batch["action"]).detach()
    enc = rows["next", "latent"]
    w = torch.tensor(10.0)
    term = 0.5 * (
        F.binary_cross_entropy_with_logits(
            model.termination_logits(pred),
            batch["next", "terminated"].float()[..., 0],
            pos_weight=w,
        )
        + F.binary_cross_entropy_with_logits(
            model.termination_logits(enc), rows["next", "terminated"].float()[..., 0], pos_weight=w
        )
    )
    reward = 0.5 * (
        F.mse_loss(model.reward(pred), batch["next", "reward"][..., 0])
        + F.mse_loss(model.reward(enc), rows["next", "reward"][..., 0])
    )
    fail = 0.5 * (
        F.smooth_l1_loss(
            model.failure_logits(pred), failure_target(batch["steps_to_termination"], cfg)
        )
        + F.smooth_l1_loss(
            model.failure_logits(enc), failure_target(rows["steps_to_termination"], cfg)
        )
    )
    torch.testing.assert_close(losses["termination"], term)
    torch.testing.assert_close(losses["reward"], reward)
    torch.testing.assert_close(losses["failure"], fail)


@pytest.mark.slow
def test_compiled_world_model_losses_equal_eager():
    """`compile on`: the cached-latent loop's losses through torch.compile give the eager losses
    and gradients (float tolerance) on a tiny model."""
    from vjepa_agent.train.world_model import _cached_losses, _loss_inputs

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cfg = WorldModelConfig(predictor_dim=32, predictor_depth=1, failure_weight=0.5, compile="on")
    model = WorldModel(cfg, state_spec())
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    batch, rows = _loss_batch(4, 5, g), _loss_batch(20, 1, g).reshape(20)
    z, target = torch.randn(4, 5, 4, generator=g), torch.randn(4, 5, 4, generator=g)
    results = []
    for compiled in (False, True):
        model.zero_grad()
        fn = _cached_losses(model, cfg, compiled=compiled)
        losses = fn(z, target, _loss_inputs(batch), _loss_inputs(rows))
        losses["loss"].backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append(({k: v.detach() for k, v in losses.items()}, grads))
    (eager, eager_grads), (compiled, compiled_grads) = results
    for k in ("loss", "teacher_forcing", "rollout", "termination", "reward", "failure"):
        torch.testing.assert_close(compiled[k], eager[k], atol=1e-5, rtol=1e-4)
    assert len(compiled_grads) == len(eager_grads) > 0
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_failure_head_old_folders_and_objective(tmp_path):
    from vjepa_agent.agent import LatentObjective

    model = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), state_spec()).eval()
    traj = torch.randn(2, 3, 4, 4)  # (E, S, H, Z)
    cost = LatentObjective(reward_weight=0.0, failure_logit_weight=2.0)(model, traj)
    torch.testing.assert_close(cost, 2.0 * model.failure_logits(traj).sum(-1))
    assert ((model.failure(traj) >= 0) & (model.failure(traj) <= 1)).all()
    # a folder written before the failure head loads without one, and says so when asked for it
    model.save_pretrained(tmp_path / "wm")
    meta = json.loads((tmp_path / "wm" / "config.json").read_text())
    del meta["config"]["failure_weight"], meta["config"]["failure_discount"]
    (tmp_path / "wm" / "config.json").write_text(json.dumps(meta))
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "wm" / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("failure_head")},
        tmp_path / "wm" / "model.safetensors",
    )
    old = WorldModel.from_pretrained(tmp_path / "wm")
    assert old.failure_head is None
    with pytest.raises(UserError, match="no failure head"):
        old.failure_logits(traj)


def test_encode_takes_numpy_and_predict_takes_python_actions():
    import numpy as np

    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), state_spec()).eval()
    obs = np.random.default_rng(0).normal(size=(3, 4))  # float64, as gymnasium returns states
    z = wm.encode(obs)
    torch.testing.assert_close(z, wm.encode(torch.as_tensor(obs)))
    torch.testing.assert_close(wm.predict(z[0], 1), wm.predict(z[:1], torch.tensor([1]))[0])
    torch.testing.assert_close(
        wm.predict(z, np.array([0, 1, 1])), wm.predict(z, torch.tensor([0, 1, 1]))
    )
    with pytest.raises(UserError, match=r"integers in \[0, 2\)"):
        wm.predict(z[0], 2)
    box = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), state_spec(BOX)).eval()
    zb = box.encode(obs[0])
    torch.testing.assert_close(box.predict(zb, [0.5]), box.predict(zb, torch.tensor([0.5])))
    frames = np.zeros((2, 3, 2, 32, 32), dtype=np.uint8)
    pix = WorldModel(
        WorldModelConfig(encoder=TINY_ENC, latent_dim=8, predictor_dim=32), pixel_spec()
    )
    assert pix.encode(frames, np.array([0, 1])).shape == (2, pix.latent_dim)


def test_torchrl_env_without_torchrl_names_the_extra(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torchrl" else find_spec(name, *a),
    )
    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1), state_spec())
    with pytest.raises(UserError, match=r"vjepa_agent\[torchrl\]"):
        wm.as_torchrl_env()
