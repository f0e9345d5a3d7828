"""The TorchRL bridge: `wm.as_torchrl_env()` rollouts equal `wm.rollout`; RolloutStore -> ReplayBuffer."""

import os
import re
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402

from vjepa_agent.config import WorldModelConfig  # noqa: E402
from vjepa_agent.errors import UserError  # noqa: E402
from vjepa_agent.world_model import WorldModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DISCRETE = {"type": "Discrete", "shape": [], "n": 2, "start": 0}
BOX = {"type": "Box", "shape": [1], "dtype": "float32", "low": [-2.0], "high": [2.0]}


def tiny_model(action=DISCRETE, **cfg) -> WorldModel:
    spec = {
        "env_id": "CartPole-v1",
        "obs": "state",
        "action_space": action,
        "observation_shape": [4],
    }
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(predictor_dim=32, predictor_depth=1, **cfg), spec).eval()
    torch.nn.init.normal_(wm.predictor.latent_out.weight, std=0.3)  # latents that move
    torch.nn.init.normal_(wm.predictor.action_in.weight, std=1.0)  # ... with the action
    return wm


def replay(actions: torch.Tensor):
    """A policy that plays actions (E, H, ...) step by step."""
    step = iter(range(actions.shape[1]))
    return lambda td: td.set("action", actions[:, next(step)])


def imagine(env, z0: torch.Tensor, actions: torch.Tensor, **kwargs):
    start = env.reset(TensorDict(latent=z0, batch_size=z0.shape[:1]), set_state=True)
    with torch.no_grad():
        return env.rollout(
            actions.shape[1], replay(actions), tensordict=start, auto_reset=False, **kwargs
        )


@pytest.mark.parametrize("action", [DISCRETE, BOX], ids=["discrete", "box"])
def test_rollout_equals_world_model_rollout(action):
    wm, E, H = tiny_model(action), 3, 7
    env = wm.as_torchrl_env(batch_size=(E,), termination_threshold=1.0)  # never terminates
    z0 = torch.randn(E, 4)
    g = torch.Generator().manual_seed(1)
    if action is DISCRETE:
        actions = torch.randint(0, 2, (E, H), generator=g)
    else:
        actions = torch.rand(E, H, 1, generator=g) * 4 - 2
    td = imagine(env, z0, actions)
    with torch.no_grad():
        traj = wm.rollout(z0, actions)  # (E, H, Z)
        reward = wm.reward(traj)
    assert td.batch_size == (E, H)
    torch.testing.assert_close(td["next", "latent"], traj)
    torch.testing.assert_close(td["next", "reward"], reward[..., None])
    # the latent advances: each step starts where the previous one ended
    torch.testing.assert_close(td["latent"][:, 0], z0)
    torch.testing.assert_close(td["latent"][:, 1:], td["next", "latent"][:, :-1])
    assert not td["next", "terminated"].any() and not td["next", "done"].any()
    assert (traj[:, -1] - z0).abs().max() > 1e-2  # the latents did move


def test_rollout_stops_where_the_termination_head_says():
    wm, E, H = tiny_model(), 2, 8
    z0, actions = torch.randn(E, 4), torch.randint(0, 2, (E, H))
    with torch.no_grad():
        p = wm.termination(wm.rollout(z0, actions))  # (E, H)
    threshold = float(p[:, H // 2 :].max()) - 1e-4  # some step in the second half terminates
    first = int(torch.nonzero((p > threshold).any(0))[0])
    td = imagine(wm.as_torchrl_env(batch_size=(E,), termination_threshold=threshold), z0, actions)
    assert td.shape == (E, first + 1)  # the rollout stops at the first terminal step
    torch.testing.assert_close(td["next", "terminated"][..., 0], p[:, : first + 1] > threshold)
    torch.testing.assert_close(td["next", "done"], td["next", "terminated"])


def test_resets_draw_from_start_latents():
    wm = tiny_model()
    start = torch.randn(5, 4)
    env = wm.as_torchrl_env(start=start, batch_size=(4,))
    env.set_seed(0)
    z = env.reset()["latent"]
    assert all((row == start).all(-1).any() for row in z)
    td = env.rollout(3)  # random actions from the action spec
    assert td["next", "latent"].shape[-1] == 4 and td["action"].dtype == torch.int64


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="context 8"):
        tiny_model(context=8).as_torchrl_env()
    with pytest.raises(UserError, match=r"shape \(K, 4\)"):
        tiny_model().as_torchrl_env(start=torch.randn(5, 3))
    with pytest.raises(UserError, match="no start latents"):
        tiny_model().as_torchrl_env().reset()


def test_replay_buffer_snippet_in_docs_runs(tmp_path):
    """docs/torchrl.md's RolloutStore -> ReplayBuffer snippet, run on a small store."""
    from vjepa_agent.envs import collect_rollouts

    collect_rollouts("CartPole-v1", 120, out=tmp_path / "cartpole", obs="state", progress=False)
    doc = (ROOT / "docs" / "torchrl.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    scope: dict = {}
    exec(snippet.replace('"data/cartpole"', repr(str(tmp_path / "cartpole"))), scope)
    batch = scope["batch"]
    episode = batch["episode"].reshape(-1, 8)  # windows of 8 steps, each inside one episode
    assert batch.shape == (64,) and (episode == episode[:, :1]).all()
    steps = batch["step"].reshape(-1, 8)
    assert (steps[:, 1:] - steps[:, :-1] == 1).all()
