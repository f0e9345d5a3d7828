"""The comparison driver: tiny real runs of compare_objectives.py, the verdicts, and MAE's loss falling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vjepa_agent.config import PretrainConfig, from_yaml
from vjepa_agent.errors import UserError
from vjepa_agent.objective_comparison import (
    CompareConfig,
    objective_table,
    objective_verdict,
    pretrain_or_reuse,
    run_config,
    variants,
)

TINY = [
    "--budget", "0.01", "--probe-epochs", "2",
    "--pretrain.encoder.dim", "32", "--pretrain.encoder.depth", "1", "--pretrain.encoder.heads", "2",
    "--pretrain.encoder.patch-size", "8", "--pretrain.predictor.dim", "16", "--pretrain.predictor.depth", "1",
    "--pretrain.predictor.heads", "2", "--pretrain.frames-per-clip", "4", "--pretrain.crop-size", "32",
    "--pretrain.batch-size", "4",
]  # fmt: skip


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@pytest.mark.slow
def test_tiny_objective_comparison_writes_table_plot_and_summary(tmp_path, run_script):
    out = tmp_path / "cmp"
    proc = run_script("compare_objectives.py", *TINY, "--out", out, "--noise-levels", "0", "1")
    assert proc.stdout.strip().splitlines()[-1] == str(out / "summary.json")
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "objectives" and s["noise_levels"] == [0.0, 1.0] and s["steps"] == 10
    assert s["seeds"] == [0]
    assert [(r["variant"], r["noise"], r["seed"]) for r in s["runs"]] == [
        (v, x, 0) for x in (0.0, 1.0) for v in ("random", "jepa", "mae")
    ]
    for r in s["runs"]:
        for kind in ("attentive", "linear"):
            assert 0 <= r["probe"][kind]["top1"] <= 1
            assert 0 <= r["probe"][kind]["train_top1"] <= 1
            assert len(r["probe"][kind]["factor_top1"]) == 2
        assert r["position"]["r2"] <= 1 and r["position"]["rmse_px"] > 0
    for key in ("jepa_minus_random_at_no_noise", "gap_at_strongest_noise"):
        assert set(s[key]) >= {"mean", "std", "per_seed"} and s[key]["probe"] == "attentive"
    assert s["jepa_minus_random_at_no_noise"]["noise"] == 0.0
    assert s["gap_at_strongest_noise"]["noise"] == 1.0
    assert set(s["gap_at_strongest_noise_by_probe"]) == {"attentive", "linear"}
    assert isinstance(s["expectation_met"], bool) and s["wall_seconds"] > 0
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| noise | JEPA attentive | MAE attentive")
    assert [line.split("|")[1].strip() for line in table[2:4]] == ["0", "1"]
    assert_png(out / "compare.png")
    # every run trained the same model, steps, batch and lr; only objective and noise differ
    configs = [from_yaml(p, PretrainConfig()) for p in sorted((out / "runs").glob("*/config.yaml"))]
    assert len(configs) == 4
    shared = {
        k: v
        for k, v in dataclasses.asdict(configs[0]).items()
        if k not in ("out", "objective", "synthetic_noise")
    }
    for c in configs:
        assert {k: v for k, v in dataclasses.asdict(c).items() if k in shared} == shared
    assert {(c.objective, c.synthetic_noise) for c in configs} == {
        (o, x) for o in ("jepa", "mae") for x in (0.0, 1.0)
    }


@pytest.mark.slow
def test_tiny_ema_ablation_shows_monitors_next_to_probe(tmp_path, run_script):
    out = tmp_path / "ema"
    run_script(
        "compare_objectives.py",
        *TINY,
        "--out",
        str(out),
        "--ablate",
        "ema",
        "--noise-levels",
        "0",
        "--probes",
        "linear",
        "--no-random-baseline",
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "ema" and [r["variant"] for r in s["runs"]] == ["ema", "no_ema"]
    assert [r["ema"] for r in s["runs"]] == [[0.99, 0.999], [0.0, 0.0]]
    assert set(s["final_effective_rank"]) == {"ema_noise0_seed0", "no_ema_noise0_seed0"}
    assert all(v >= 1 for v in s["min_effective_rank"].values())
    table = (out / "results.md").read_text()
    assert "JEPA, momentum 0" in table and "effective rank" in table
    assert_png(out / "compare.png")
    # the finished runs are reused; a changed configuration in the same folder is refused
    cfg = CompareConfig(out=out, ablate="ema", budget=0.01)
    cfg.pretrain = from_yaml(out / "runs" / "ema_noise0_seed0" / "config.yaml", PretrainConfig())
    run = run_config(dataclasses.replace(cfg, budget=1.0), variants(cfg)[0], 0.0)
    assert pretrain_or_reuse(run)["steps"] == 10  # reused, not retrained
    with pytest.raises(UserError, match="different configuration"):
        pretrain_or_reuse(dataclasses.replace(run, lr=1.0))


def test_verdict_and_table_arithmetic():
    def run(variant, noise, acc):
        return {
            "variant": variant,
            "noise": noise,
            "probe": {"attentive": {"top1": acc, "chance": 0.0625}},
        }

    cfg = CompareConfig(noise_levels=(0.0, 1.0), probes=("attentive",), random_baseline=False)
    runs = [
        run("jepa", 0.0, 0.9),
        run("mae", 0.0, 0.8),
        run("jepa", 1.0, 0.7),
        run("mae", 1.0, 0.4),
    ]
    v = objective_verdict(runs, cfg)
    assert v["gap_at_strongest_noise"]["mean"] == pytest.approx(0.3)
    assert v["gap_at_strongest_noise_by_probe"]["attentive"] == pytest.approx(0.3)
    assert v["drop_from_weakest_to_strongest_noise"] == pytest.approx({"jepa": 0.2, "mae": 0.4})
    assert v["expectation_met"] is True
    runs[2] = run("jepa", 1.0, 0.45)
    assert objective_verdict(runs, cfg)["expectation_met"] is False
    assert "| 1 | 45.0 | 40.0 | +5.0 |" in objective_table(runs, cfg)


def test_seeds_are_paired_and_reported_as_mean_and_std():
    def run(variant, seed, acc):
        return {
            "variant": variant,
            "noise": 0.0,
            "seed": seed,
            "probe": {"attentive": {"top1": acc, "chance": 0.0625}},
        }

    cfg = CompareConfig(noise_levels=(0.0,), probes=("attentive",), seeds=(0, 1, 2))
    runs = [run("jepa", 0, 0.5), run("jepa", 1, 0.6), run("jepa", 2, 0.7)]
    runs += [run("mae", 0, 0.3), run("mae", 1, 0.5), run("mae", 2, 0.4)]
    runs += [run("random", 0, 0.2), run("random", 1, 0.2), run("random", 2, 0.2)]
    v = objective_verdict(runs, cfg)
    over = v["jepa_minus_random_at_no_noise"]
    assert over["mean"] == pytest.approx(0.4) and over["std"] == pytest.approx(0.1)
    assert over["per_seed"] == pytest.approx({0: 0.3, 1: 0.4, 2: 0.5})
    gap = v["gap_at_strongest_noise"]  # paired by seed: 0.2, 0.1, 0.3
    assert gap["mean"] == pytest.approx(0.2) and gap["std"] == pytest.approx(0.1)
    assert v["targets"]["jepa_minus_random_at_no_noise >= 0.20"] is True
    assert "| 0 | 60.0 ± 10.0 | 40.0 ± 10.0 | 20.0 ± 0.0 | +20.0 ± 10.0 |" in objective_table(
        runs, cfg
    )


@pytest.mark.slow
def test_mae_loss_falls_on_clean_synthetic_videos(tmp_path, run_script):
    out = tmp_path / "mae"
    args = [
        "--objective", "mae", "--out", str(out), "--max-steps", "60", "--lr", "2e-3", "--start-lr", "2e-4",
        "--encoder.dim", "32", "--encoder.depth", "2", "--encoder.heads", "2", "--encoder.patch-size", "8",
        "--predictor.dim", "16", "--predictor.depth", "1", "--predictor.heads", "2", "--frames-per-clip", "4",
        "--crop-size", "32", "--batch-size", "8", "--synthetic-videos", "16", "--synthetic-noise", "0",
        "--warmup-steps", "3", "--log-every", "1", "--checkpoint-every", "0",
    ]  # fmt: skip
    run_script("pretrain_video.py", *args)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 60
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10  # per-batch losses are noisy
    assert last < 0.8 * first, (first, last)
    assert json.loads((out / "summary.json").read_text())["objective"] == "mae"
