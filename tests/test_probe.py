"""Frozen probes: the attentive probe's arithmetic, accuracy on trivial and random features, eval_probe.py."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange

from vjepa_agent.probe import (
    AttentiveProbe,
    LinearProbe,
    evaluate_probe,
    fit_and_evaluate,
    stratified_split,
)

TINY_PRETRAIN = [
    "--encoder.dim", "32", "--encoder.depth", "2", "--encoder.heads", "2", "--encoder.patch-size", "8",
    "--predictor.dim", "16", "--predictor.depth", "1", "--predictor.heads", "2",
    "--frames-per-clip", "4", "--crop-size", "32", "--batch-size", "4", "--synthetic-videos", "16",
    "--warmup-steps", "1", "--log-every", "1", "--monitor-every", "1",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and immune to other processes on the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_attention(probe: AttentiveProbe, tokens: torch.Tensor) -> torch.Tensor:
    """The textbook computation: project every token to keys and values, attend with the query."""
    h = probe.heads
    x = probe.norm_tokens(tokens)
    q = rearrange(probe.to_q(probe.query), "1 (h e) -> 1 h 1 e", h=h)
    k = rearrange(probe.to_k(x), "b n (h e) -> b h n e", h=h)
    v = rearrange(probe.to_v(x), "b n (h e) -> b h n e", h=h)
    out = torch.nn.functional.scaled_dot_product_attention(q.expand(len(x), -1, -1, -1), k, v)
    x = probe.query + probe.proj(rearrange(out, "b h 1 e -> b (h e)"))
    x = x + probe.mlp(probe.norm_mlp(x))
    return probe.head(probe.norm_out(x))


def test_attentive_probe_equals_explicit_cross_attention():
    torch.manual_seed(0)
    probe = AttentiveProbe(dim=16, num_classes=5, heads=4)
    for p in probe.parameters():  # non-trivial values everywhere, biases included
        torch.nn.init.normal_(p, std=0.3)
    tokens = torch.randn(3, 7, 16)
    assert probe(tokens).shape == (3, 5)
    torch.testing.assert_close(
        probe(tokens), reference_attention(probe, tokens), rtol=1e-5, atol=1e-5
    )


def test_linear_probe_shape():
    assert LinearProbe(8, 3)(torch.randn(4, 5, 8)).shape == (4, 3)


def features(
    label_signal: float, n: int, classes: int = 8, tokens: int = 6, dim: int = 16, seed: int = 0
):
    """Tokens (n, tokens, dim) of Gaussian noise, plus label_signal times a one-hot of the label in every token."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    x = torch.randn(n, tokens, dim, generator=g)
    x[:, :, :classes] += label_signal * torch.nn.functional.one_hot(labels, classes)[:, None, :]
    return x, labels


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_probe_is_near_perfect_on_label_features_and_chance_on_random_ones(kind):
    easy = fit_and_evaluate(kind, features(2.0, 256), features(2.0, 160, seed=1), 8, epochs=40)
    assert easy["top1"] > 0.95, easy["top1"]
    noise = fit_and_evaluate(kind, features(0.0, 256), features(0.0, 160, seed=1), 8, epochs=40)
    assert noise["chance"] == pytest.approx(1 / 8)
    assert noise["top1"] < noise["chance"] + 0.1, noise["top1"]  # held-out accuracy stays at chance


def test_evaluate_reports_per_class_accuracy_and_chance():
    class Fixed(torch.nn.Module):  # predicts class 0 for every clip
        def forward(self, tokens):
            return torch.tensor([1.0, 0.0, 0.0]).expand(len(tokens), -1)

    labels = torch.tensor([0, 0, 0, 1])
    m = evaluate_probe(
        Fixed(), torch.zeros(4, 2, 3), labels, num_classes=3, class_names=["a", "b", "c"]
    )
    assert m["top1"] == 0.75 and m["chance"] == 0.75
    assert m["per_class"] == {"a": 1.0, "b": 0.0, "c": None}


def test_stratified_split_keeps_every_class_in_both_parts():
    labels = [0] * 10 + [1] * 5 + [2] * 2 + [3]
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    assert sorted({labels[i] for i in val}) == [0, 1, 2]  # a class with one video stays in train
    assert sum(labels[i] == 0 for i in val) == 2


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, run_script):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    run_script("pretrain_video.py", *TINY_PRETRAIN, "--out", str(out), "--max-steps", "3")
    return out


def test_eval_probe_on_synthetic_videos_writes_summary(tiny_export, tmp_path, run_script):
    out = tmp_path / "probe"
    proc = run_script(
        "eval_probe.py", "--encoder", str(tiny_export / "export"), "--out", str(out), "--probe", "linear",
        "--synthetic-train", "32", "--synthetic-val", "16", "--epochs", "2",
    )  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == str(out / "summary.json")
    s = json.loads((out / "summary.json").read_text())
    assert (s["num_train"], s["num_val"], s["probe"], s["which"]) == (32, 16, "linear", "teacher")
    assert 0 <= s["top1"] <= 1 and 0 < s["chance"] <= 1 and len(s["per_class"]) == 16


@pytest.mark.slow
def test_eval_probe_on_a_class_folder_of_videos(tiny_export, tmp_path, run_script):
    from vjepa_agent.data.synthetic import write_synthetic_mp4s

    for i, name in enumerate(["cats", "dogs"]):
        write_synthetic_mp4s(tmp_path / "videos" / name, n=5, frames=6, size=32, seed=i)
    out = tmp_path / "probe"
    run_script(
        "eval_probe.py", "--encoder", str(tiny_export), "--data", str(tmp_path / "videos"), "--which", "student",
        "--out", str(out), "--epochs", "2", "--val-fraction", "0.4",
    )  # fmt: skip
    s = json.loads((out / "summary.json").read_text())
    assert (s["num_train"], s["num_val"], s["which"]) == (6, 4, "student")
    assert set(s["per_class"]) == {"cats", "dogs"}


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["jepa", "mae"])
def test_trained_encoder_tokens_still_carry_the_object_position(objective, tmp_path, run_script):
    """The probe path of a trained encoder (export, load, clip normalisation, no masks) keeps
    where the object is: a linear read-out of its centre from the frozen tokens beats the mean
    guess by far, as it does on the random initialisation."""
    from vjepa_agent.checkpoint import load_encoder
    from vjepa_agent.probe import (
        extract_features,
        object_centres,
        position_decode,
        synthetic_probe_sets,
    )

    out = tmp_path / objective
    run_script(
        "pretrain_video.py", *TINY_PRETRAIN, "--out", str(out), "--max-steps", "20",
        "--objective", objective, "--checkpoint-every", "0",
    )  # fmt: skip
    encoder, meta = load_encoder(out, "teacher")
    train_set, test_set = synthetic_probe_sets(
        160, 64, meta["frames_per_clip"], meta["crop_size"], 0.0, seed=0
    )
    tub = encoder.cfg.tubelet_size
    train = extract_features(encoder, train_set), object_centres(train_set, tub)
    test = extract_features(encoder, test_set), object_centres(test_set, tub)
    pos = position_decode((train[0][0], train[1]), (test[0][0], test[1]))
    assert pos["r2"] > 0.3, pos
    assert pos["rmse_px"] < 0.85 * pos["mean_guess_rmse_px"]


def test_object_centres_follow_the_rendered_object():
    """The ground truth the read-out is scored on: the centre moves along the label's direction."""
    from vjepa_agent.data.synthetic import DIRECTIONS, SyntheticVideoDataset
    from vjepa_agent.probe import object_centres

    data = SyntheticVideoDataset(16, 8, 64, split="probe_train")
    centres = object_centres(data, 2)  # (M, 4, 2)
    assert centres.shape == (16, 4, 2)
    for i in range(16):
        step = centres[i, -1] - centres[i, 0]
        direction = DIRECTIONS[data[i]["label"] % len(DIRECTIONS)]
        axis, sign = {"right": (0, 1), "left": (0, -1), "down": (1, 1), "up": (1, -1)}[direction]
        assert sign * float(step[axis]) > 2 and abs(float(step[1 - axis])) < 1e-4


def test_eval_probe_bad_encoder_path_is_one_line_error(tmp_path, run_script):
    proc = run_script(
        "eval_probe.py",
        "--encoder",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "p"),
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "missing" in proc.stderr
