"""Rollout collection and storage: exact episode boundaries, memmap round trip, sampling."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


import imageio.v3 as imageio  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from vjepa_agent.envs import POINT_GOAL_ID, collect_rollouts  # noqa: E402

from vjepa_agent.data.rollouts import RolloutStore  # noqa: E402
from vjepa_agent.errors import UserError  # noqa: E402

# CartPole terminates when |x| > 2.4 or |theta| > 12 degrees.
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * np.pi / 360


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    """240 pixel transitions of random CartPole (many short episodes) in a fresh store."""
    path = tmp_path_factory.mktemp("rollouts") / "cartpole"
    td = collect_rollouts("CartPole-v1", 240, out=path, size=32, num_envs=4, progress=False)
    return path, td


def _within_episode_pairs(td):
    """Row indices t where rows t and t + 1 belong to the same episode."""
    same = td["episode"][1:] == td["episode"][:-1]
    return torch.nonzero(same).squeeze(1)


def test_layout_and_dtypes(cartpole):
    _, td = cartpole
    assert td.batch_size == (240,)
    assert td["pixels"].shape == (240, 3, 2, 32, 32) and td["pixels"].dtype == torch.uint8
    assert td["next", "pixels"].shape == td["pixels"].shape
    assert td["observation"].shape == (240, 4) and td["observation"].dtype == torch.float32
    assert td["action"].shape == (240,) and td["action"].dtype == torch.int64
    for key in ("reward", "terminated", "truncated", "done"):
        assert td["next", key].shape == (240, 1)
    assert torch.equal(td["next", "done"], td["next", "terminated"] | td["next", "truncated"])


def test_exact_episode_boundaries(cartpole):
    _, td = cartpole
    done = td["next", "done"].squeeze(1)
    terminated = td["next", "terminated"].squeeze(1)
    assert terminated.sum() >= 5  # random CartPole ends every ~20 steps

    # The next obs of a terminated step is the true terminal state: out of bounds.
    final = td["next", "observation"][terminated]
    out_of_bounds = (final[:, 0].abs() > X_LIMIT) | (final[:, 2].abs() > THETA_LIMIT)
    assert out_of_bounds.all()
    # ... and no observation that is stored as a current obs is out of bounds.
    obs = td["observation"]
    assert ((obs[:, 0].abs() <= X_LIMIT) & (obs[:, 2].abs() <= THETA_LIMIT)).all()

    # Within an episode, next obs (state and pixels) of t is the obs of t + 1.
    t = _within_episode_pairs(td)
    assert torch.equal(td["next", "observation"][t], td["observation"][t + 1])
    assert torch.equal(td["next", "pixels"][t], td["pixels"][t + 1])
    assert torch.equal(td["step"][t + 1], td["step"][t] + 1)
    assert not done[t].any()  # a done step is always its episode's last row

    # Episodes are contiguous, numbered in row order, and start at step 0.
    starts = torch.ones(240, dtype=torch.bool)
    starts[t + 1] = False
    assert (td["step"][starts] == 0).all()
    ids = td["episode"][starts]
    assert torch.equal(ids, torch.arange(len(ids)))
    # The frame stack of a first step repeats its frame (no frame from the previous episode).
    first = td["pixels"][starts]
    assert torch.equal(first[:, :, 0], first[:, :, 1])


def test_truncation_and_next_obs_follow_dynamics():
    # PointGoal moves the disc by 0.1 * action, clipped to the arena, and truncates at 50 steps.
    td = collect_rollouts(POINT_GOAL_ID, 240, obs="state", num_envs=2, progress=False, seed=3)
    expected = (td["observation"] + 0.1 * td["action"].clamp(-1, 1)).clamp(-0.9, 0.9)
    assert torch.allclose(td["next", "observation"], expected, atol=1e-6)
    truncated = td["next", "truncated"].squeeze(1)
    assert truncated.any()
    assert (td["step"][truncated] == 49).all()


def test_same_seed_same_data():
    a = collect_rollouts("CartPole-v1", 40, obs="state", num_envs=2, progress=False, seed=7)
    b = collect_rollouts("CartPole-v1", 40, obs="state", num_envs=2, progress=False, seed=7)
    assert (a == b).all()


@pytest.mark.parametrize("p", [0.0, 0.75])
def test_sticky_actions_repeat_the_previous_action_within_episodes(p):
    td = collect_rollouts(
        "CartPole-v1", 4000, obs="state", num_envs=4, progress=False, seed=3, sticky_actions=p
    )
    a, step = td["action"], td["step"]
    same_ep = torch.nonzero(step[1:] == step[:-1] + 1).squeeze(1)  # rows t, t + 1 of one episode
    repeats = (a[same_ep + 1] == a[same_ep]).float().mean()
    # kept with probability p, else a fresh uniform draw that equals the last half the time
    assert float(repeats) == pytest.approx(p + (1 - p) / 2, abs=0.03)
    # one env: the first action of an episode is a fresh draw, not the last episode's last one
    one = collect_rollouts(
        "CartPole-v1", 3000, obs="state", num_envs=1, progress=False, seed=3, sticky_actions=p
    )
    firsts = torch.nonzero(one["step"] == 0).squeeze(1)[1:]  # episodes follow each other
    tied = (one["action"][firsts] == one["action"][firsts - 1]).float().mean()
    assert float(tied) == pytest.approx(0.5, abs=0.1)


def test_sticky_actions_out_of_range_is_one_line():
    with pytest.raises(UserError, match=r"sticky_actions must be in \[0, 1\)"):
        collect_rollouts("CartPole-v1", 10, obs="state", progress=False, sticky_actions=1.0)


def test_policy_callable():
    calls = []

    def always_right(obs_batch):
        calls.append(obs_batch.shape)
        return np.ones(len(obs_batch), dtype=np.int64)

    td = collect_rollouts(
        "CartPole-v1", 20, obs="state", num_envs=2, policy=always_right, progress=False
    )
    assert calls[0] == (2, 4)
    assert (td["action"] == 1).all()


def test_reopen_in_new_process_equals_written(cartpole, tmp_path, run_script):
    path, td = cartpole
    dump = tmp_path / "dump.pt"
    code = (
        "import sys, torch\n"
        "from vjepa_agent.data.rollouts import RolloutStore\n"
        "data = RolloutStore.open(sys.argv[1], expect_env='CartPole-v1', expect_obs='pixels').data\n"
        "torch.save(dict(data.flatten_keys('.').items()), sys.argv[2])\n"
    )
    run_script("-c", code, path, dump)
    loaded = torch.load(dump, weights_only=True)
    written = dict(td.flatten_keys(".").items())
    assert loaded.keys() == written.keys()
    for key, value in written.items():
        assert torch.equal(loaded[key], value), key


def test_append_grows_and_keeps_episode_ids_unique(tmp_path):
    path = tmp_path / "store"
    first = collect_rollouts(POINT_GOAL_ID, 60, out=path, size=32, num_envs=2, progress=False)
    second = collect_rollouts(
        POINT_GOAL_ID, 40, out=path, size=32, num_envs=2, progress=False, seed=1
    )
    store = RolloutStore.open(path, expect_env=POINT_GOAL_ID, expect_obs="pixels")
    assert len(store) == 100 and store.meta["num_transitions"] == 100
    assert int(second["episode"].min()) == int(first["episode"].max()) + 1
    episodes = store.episodes()
    assert len({e.id for e in episodes}) == len(episodes)
    assert sum(e.length for e in episodes) == 100
    assert torch.equal(store.data["pixels"][60:], second["pixels"])
    # one chunk per append, in row order, read without the store's copy of everything
    assert [len(c) for c in store.chunks] == [60, 40]
    assert torch.equal(torch.as_tensor(store.chunks[1]["pixels"]), second["pixels"])


def test_sample_sequences_stay_inside_one_episode(cartpole):
    store = RolloutStore.open(cartpole[0])
    batch = store.sample_sequences(64, 6, generator=torch.Generator().manual_seed(0))
    assert batch.batch_size == (64, 6)
    assert batch["pixels"].shape == (64, 6, 3, 2, 32, 32)
    assert (batch["episode"] == batch["episode"][:, :1]).all()
    assert (batch["step"][:, 1:] == batch["step"][:, :-1] + 1).all()
    assert not batch["next", "done"][:, :-1].any()  # only a window's last step may end it
    # prev_action: the action of the row before, inside the window and before its first step
    assert torch.equal(batch["prev_action"][:, 1:], batch["action"][:, :-1])
    data, first = store.data, batch["step"][:, 0] > 0
    rows = [
        int(((data["episode"] == e) & (data["step"] == s - 1)).nonzero())
        for e, s in zip(batch["episode"][first, 0], batch["step"][first, 0])
    ]
    assert first.any() and torch.equal(batch["prev_action"][first, 0], data["action"][rows])
    again = store.sample_sequences(64, 6, generator=torch.Generator().manual_seed(0))
    assert (batch == again).all()


def test_split_episodes_and_restricted_sampling(cartpole):
    store = RolloutStore.open(cartpole[0])
    train, holdout = store.split_episodes(0.25, seed=0)
    all_ids = torch.tensor([e.id for e in store.episodes()])
    assert torch.equal(torch.cat([train, holdout]).sort().values, all_ids)
    assert len(holdout) == round(0.25 * len(all_ids))
    batch = store.sample_sequences(32, 2, episodes=holdout)
    assert torch.isin(batch["episode"], holdout).all()
    rows = store.episode_indices(holdout)
    assert torch.isin(store.data["episode"][rows], holdout).all()
    with pytest.raises(UserError, match="shorter seq_len"):
        store.sample_sequences(4, 10_000)


def test_mismatched_or_missing_store_is_a_user_error(cartpole, tmp_path):
    path, _ = cartpole
    with pytest.raises(UserError, match=r"collected on CartPole-v1 \(pixels\) but Pendulum-v1"):
        RolloutStore.open(path, expect_env="Pendulum-v1")
    with pytest.raises(UserError, match="but CartPole-v1 \\(state\\)"):
        RolloutStore.open(path, expect_obs="state")
    with pytest.raises(UserError, match="size=32 but size=64"):
        collect_rollouts("CartPole-v1", 8, out=path, size=64, progress=False)
    with pytest.raises(UserError, match="does not exist"):
        RolloutStore.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no meta.json"):
        RolloutStore.open(tmp_path / "empty")
    with pytest.raises(UserError, match="already exists"):
        RolloutStore.create(path, {"env_id": "CartPole-v1", "obs": "pixels"})


def test_videos_one_per_episode(tmp_path):
    td = collect_rollouts(
        POINT_GOAL_ID, 30, size=32, num_envs=2, progress=False, video_dir=tmp_path / "v"
    )
    videos = sorted((tmp_path / "v").glob("*.mp4"))
    ids, lengths = torch.unique_consecutive(td["episode"], return_counts=True)
    assert [p.name for p in videos] == [f"episode_{i:06d}.mp4" for i in ids.tolist()]
    frames = list(imageio.imiter(videos[0], plugin="pyav"))
    assert len(frames) == int(lengths[0]) + 1 and frames[0].shape == (32, 32, 3)


def test_steps_to_termination(cartpole):
    store = RolloutStore.open(cartpole[0])
    k, data = store.steps_to_termination(), store.data
    terminated = data["next", "terminated"][:, 0]
    assert (k[terminated] == 0).all()
    for e in store.episodes():
        rows = slice(e.start, e.start + e.length)
        if terminated[e.start + e.length - 1]:
            expected = torch.arange(e.length - 1, -1, -1, dtype=torch.float32)
            assert torch.equal(k[rows], expected)
        else:  # truncated or cut by the end of the collection: never fails in the data
            assert torch.isinf(k[rows]).all()
    assert torch.isinf(k).any() and (k == 0).any()
    # sampled windows carry the same numbers as their rows
    batch = store.sample_sequences(32, 3, generator=torch.Generator().manual_seed(1))
    for e, s, got in zip(batch["episode"], batch["step"], batch["steps_to_termination"]):
        row = (data["episode"] == e[0]) & (data["step"] == s[0])
        assert torch.equal(got, k[row.nonzero()[0, 0] + torch.arange(3)])


def test_store_of_frames_rendered_larger_is_refused(tmp_path):
    path = tmp_path / "cp"
    collect_rollouts("CartPole-v1", 8, out=path, size=32, progress=False)
    meta_path = path / "meta.json"
    import json

    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "render_scale": 2}))
    with pytest.raises(UserError, match="rendered at a larger scale"):
        collect_rollouts("CartPole-v1", 8, out=path, size=32, progress=False)


def test_a_store_appends_frames_of_its_size_however_the_size_is_written(tmp_path):
    """(16, 64) asked of a store whose meta.json holds [16, 64] appends; another size is refused."""
    kw = dict(obs="pixels", num_envs=2, seed=0, frame_stack=2, grayscale=True, progress=False)
    collect_rollouts("CartPole-v1", 8, out=tmp_path / "d", size=(16, 64), **kw)
    collect_rollouts("CartPole-v1", 8, out=tmp_path / "d", size=(16, 64), **kw)
    assert RolloutStore.open(tmp_path / "d").meta["num_transitions"] == 16
    with pytest.raises(UserError, match=r"size=\[16, 64\] but size=\(16, 32\) was requested"):
        collect_rollouts("CartPole-v1", 8, out=tmp_path / "d", size=(16, 32), **kw)
