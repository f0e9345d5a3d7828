"""The library's own evidence: JEPA vs pixel reconstruction across noise, and the EMA ablation.

`run_compare(CompareConfig)` is the body of `vjepa-compare`. It runs one job per
(variant, noise strength), each in its own process (one Accelerator per process), `jobs` at a time:

1. Pretrain the variant on the synthetic 'pretrain' split at that strength. Every variant shares
   the `pretrain` config: encoder and predictor sizes, masks, steps, batch, learning rate, seed.
   Variants are the objectives JEPA and MAE, or with `ablate="ema"` JEPA with the configured EMA
   against momentum 0 (teacher = current student, stop-gradient). The randomly initialised
   encoder (every run's starting point) is probed too, as the floor.
2. Freeze the exported encoder, cache its tokens on the labelled 'probe_train' and 'probe_test'
   splits at the same strength, train the attentive and the linear probe on the first and score
   them on the second. The job writes `runs/<variant>_noise<x>/result.json`.

Then the driver writes `results.md` (table), `compare.png` (plot) and `summary.json`, and prints
the summary's path. A finished run whose config matches is reused, an interrupted one resumes, so
a stopped comparison continues where it stopped. `budget` scales steps and video counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from vjepa_agent.config import CompareConfig, PretrainConfig, from_yaml, save_yaml, to_dict
from vjepa_agent.errors import UserError, require_extra
from vjepa_agent.probe import extract_features, fit_and_evaluate

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- runs


@dataclass
class Variant:
    """One recipe of the comparison: a pretraining objective and EMA, or the untrained encoder."""

    name: str
    label: str
    objective: str | None  # None = no pretraining (the random-init floor)
    ema: tuple[float, float]


RANDOM = Variant("random", "random init", None, (0.0, 0.0))


def variants(cfg: CompareConfig) -> list[Variant]:
    """The trained variants: JEPA and MAE, or (ablate='ema') JEPA with the configured EMA and with momentum 0."""
    base = tuple(cfg.pretrain.ema)
    if cfg.ablate == "ema":
        return [
            Variant("ema", f"JEPA, EMA {base[0]:g}->{base[1]:g}", "jepa", base),
            Variant("no_ema", "JEPA, momentum 0", "jepa", (0.0, 0.0)),
        ]
    return [Variant("jepa", "JEPA", "jepa", base), Variant("mae", "MAE", "mae", base)]


def all_variants(cfg: CompareConfig) -> list[Variant]:
    return variants(cfg) + ([RANDOM] if cfg.random_baseline else [])


def scale(n: int, budget: float, minimum: int) -> int:
    return max(minimum, round(n * budget))


def job_dir(cfg: CompareConfig, variant: Variant, noise: float, seed: int = 0) -> Path:
    return Path(cfg.out) / "runs" / f"{variant.name}_noise{noise:g}_seed{seed}"


def run_config(cfg: CompareConfig, variant: Variant, noise: float, seed: int = 0) -> PretrainConfig:
    """The pretraining config of one run: the shared config, scaled by budget, with this variant, noise and seed."""
    base = cfg.pretrain
    return dataclasses.replace(
        base,
        out=job_dir(cfg, variant, noise, seed),
        seed=seed,
        objective=variant.objective or base.objective,
        ema=variant.ema,
        synthetic_noise=noise,
        max_steps=scale(base.max_steps, cfg.budget, 1),
        warmup_steps=round(base.warmup_steps * min(1.0, cfg.budget)),
        synthetic_videos=scale(base.synthetic_videos, cfg.budget, base.batch_size),
        resume="auto",
    )


def pretrain_or_reuse(run: PretrainConfig) -> dict[str, Any]:
    """Pretrain one run in this process, or reuse it when a finished run with this config is on disk."""
    from vjepa_agent.train.pretrain import pretrain

    out = Path(run.out)
    if (out / "config.yaml").is_file():
        if yaml.safe_load((out / "config.yaml").read_text()) != to_dict(run):
            raise UserError(
                f"'{out}' holds a run with a different configuration; choose another --out or delete that folder"
            )
        if (out / "summary.json").is_file() and (out / "export" / "config.json").is_file():
            print(f"reusing finished run {out}")
            return json.loads((out / "summary.json").read_text())
    return pretrain(run)  # resume='auto' continues an interrupted run from its last checkpoint


def read_curves(run_dir: Path) -> list[dict[str, float]]:
    """(step, loss, teacher_std, effective_rank) from the run's metrics.jsonl, at the monitored steps."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = ("step", "loss", "teacher_std", "effective_rank")
    return [{k: r[k] for k in keys} for r in rows if "effective_rank" in r]


# ---------------------------------------------------------------------------- one job


def run_job(cfg: CompareConfig, variant: Variant, noise: float, seed: int = 0) -> dict[str, Any]:
    """Pretrain one variant at one noise strength and seed (unless random), probe its frozen encoder; writes result.json.

    Runs in its own process (see `launch_jobs`): one Accelerator per process.
    """
    from vjepa_agent.checkpoint import load_encoder
    from vjepa_agent.data.synthetic import NUM_CLASSES
    from vjepa_agent.models.encoder import VideoEncoder
    from vjepa_agent.probe import (
        object_centres,
        position_decode,
        synthetic_class_names,
        synthetic_probe_sets,
    )

    t0 = time.perf_counter()
    folder = job_dir(cfg, variant, noise, seed)
    folder.mkdir(parents=True, exist_ok=True)
    pre = cfg.pretrain
    result: dict[str, Any] = {
        "variant": variant.name,
        "label": variant.label,
        "noise": noise,
        "seed": seed,
    }
    # 1. the encoder: pretrained and exported, or the random initialisation of this seed
    if variant.objective is None:
        torch.manual_seed(seed)
        encoder = VideoEncoder(pre.encoder).eval().requires_grad_(False)
    else:
        summary = pretrain_or_reuse(run_config(cfg, variant, noise, seed))
        encoder, _ = load_encoder(folder, "teacher")
        keys = ("steps", "final_loss_window", "teacher_std", "effective_rank", "train_seconds")
        result.update(
            objective=variant.objective,
            ema=list(variant.ema),
            run_dir=str(folder),
            **{k: summary[k] for k in keys},
            curves=read_curves(folder),
        )
    # 2. frozen features on the labelled probe sets at this noise (the same clips for every
    # seed), then every probe and the linear read-out of the object's position
    train_set, test_set = synthetic_probe_sets(
        scale(cfg.probe_train_videos, cfg.budget, 32),
        scale(cfg.probe_test_videos, cfg.budget, 32),
        pre.frames_per_clip,
        pre.crop_size,
        noise,
        pre.seed,
        tuple(pre.synthetic_object_scale),
    )
    train, test = extract_features(encoder, train_set), extract_features(encoder, test_set)
    names = synthetic_class_names()
    result["probe"] = {
        kind: fit_and_evaluate(
            kind, train, test, NUM_CLASSES, names, epochs=cfg.probe_epochs, seed=seed, factor=4
        )
        for kind in cfg.probes
    }
    tub = encoder.cfg.tubelet_size
    result["position"] = position_decode(
        (train[0], object_centres(train_set, tub)), (test[0], object_centres(test_set, tub))
    )
    result["job_seconds"] = time.perf_counter() - t0
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _job_main(config_yaml: str, variant: str, noise: str, seed: str = "0") -> None:
    """Entry point of a job process: `python -c '...' out/config.yaml jepa 0.5 1`."""
    cfg = from_yaml(config_yaml, CompareConfig())
    chosen = next(v for v in all_variants(cfg) if v.name == variant)
    run_job(cfg, chosen, float(noise), int(seed))


def default_jobs(cfg: CompareConfig) -> int:
    """Jobs at once: one per CPU core on a CPU-only machine (each single-threaded), one with a GPU."""
    if cfg.jobs is not None:
        return cfg.jobs
    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def launch_jobs(cfg: CompareConfig, plan: list[tuple[Variant, float, int]]) -> list[dict[str, Any]]:
    """Run every (variant, noise, seed) job in its own process, `jobs` at a time; results in plan order.

    Small models on a few CPU cores train faster as parallel single-threaded processes than as one
    multi-threaded process, and a single-threaded process does not stall when other programs take
    the cores (OpenMP threads wait for each other at every operation).
    """
    jobs = min(default_jobs(cfg), len(plan))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {
        "OMP_NUM_THREADS": str(threads),  # a value set by the user wins (below)
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    code = "import sys; from vjepa_agent.objective_comparison import _job_main; _job_main(*sys.argv[1:])"

    def one(job: tuple[Variant, float, int]) -> dict[str, Any]:
        variant, noise, seed = job
        folder = job_dir(cfg, variant, noise, seed)
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-c",
            code,
            str(Path(cfg.out) / "config.yaml"),
            variant.name,
            repr(noise),
            str(seed),
        ]
        with open(folder / "job.log", "w") as log:
            proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            tail = (folder / "job.log").read_text()[-2000:]
            raise RuntimeError(
                f"job {folder.name} failed (exit {proc.returncode}); end of {folder / 'job.log'}:\n{tail}"
            )
        result = json.loads((folder / "result.json").read_text())
        print(
            f"noise {noise:g}  seed {seed}  {variant.label}: " + _accuracy_line(result["probe"]),
            flush=True,
        )
        return result

    print(
        f"{len(plan)} jobs, {jobs} at a time, {env['OMP_NUM_THREADS']} thread(s) each", flush=True
    )
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, plan))


# ---------------------------------------------------------------------------- the comparison


def run_compare(cfg: CompareConfig) -> dict:
    """Pretrain, probe, tabulate and plot; writes out/summary.json and returns it."""
    from vjepa_agent.data.synthetic import NUM_CLASSES

    cfg.validate()
    require_extra("tensorboard", "viz", "pretraining logs to TensorBoard")
    require_extra("matplotlib", "viz", "the comparison plots its results (compare.png)")
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")  # the jobs read it

    # 1. every (variant, noise, seed) job; the trained ones first, the quick random-init probes last
    seeds = list(cfg.seeds)
    plan = [(v, x, s) for s in seeds for v in variants(cfg) for x in cfg.levels()]
    plan += [(RANDOM, x, s) for s in seeds for x in cfg.levels()] if cfg.random_baseline else []
    results = launch_jobs(cfg, plan)
    order = {v.name: i for i, v in enumerate([RANDOM, *variants(cfg)])}
    runs = sorted(results, key=lambda r: (r["noise"], order[r["variant"]], r["seed"]))

    # 2. headline numbers, table, plot, summary
    summary = {
        "mode": "ema" if cfg.ablate == "ema" else "objectives",
        "noise_levels": list(cfg.levels()),
        "budget": cfg.budget,
        "steps": run_config(cfg, variants(cfg)[0], 0.0).max_steps,
        "seeds": seeds,
        "probe_train_videos": scale(cfg.probe_train_videos, cfg.budget, 32),
        "probe_test_videos": scale(cfg.probe_test_videos, cfg.budget, 32),
        "num_classes": NUM_CLASSES,
        "probes": list(cfg.probes),
        "jobs": min(default_jobs(cfg), len(plan)),
        "runs": [{k: v for k, v in r.items() if k != "curves"} for r in runs],
    }
    summary.update(ema_verdict(runs, cfg) if cfg.ablate == "ema" else objective_verdict(runs, cfg))
    table = out / "results.md"
    table.write_text(ema_table(runs, cfg) if cfg.ablate == "ema" else objective_table(runs, cfg))
    plot = out / "compare.png"
    (plot_ema if cfg.ablate == "ema" else plot_objectives)(runs, cfg, plot)
    summary.update(
        {"table": str(table), "plot": str(plot), "wall_seconds": time.perf_counter() - start}
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table.read_text())
    print(out / "summary.json")
    return summary


def _accuracy_line(probes: dict) -> str:
    return "  ".join(f"{kind} top-1 {m['top1']:.3f}" for kind, m in probes.items())


def _per_seed(runs: list[dict], variant: str, noise: float, kind: str) -> dict[int, float]:
    """{seed: probe top-1} of one (variant, noise)."""
    return {
        r.get("seed", 0): r["probe"][kind]["top1"]
        for r in runs
        if r["variant"] == variant and r["noise"] == noise
    }


def _mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return mean, math.sqrt(var)


def _top1(runs: list[dict], variant: str, noise: float, kind: str) -> float:
    """Probe top-1 of one (variant, noise), the mean over seeds (NaN when absent)."""
    return _mean_std(list(_per_seed(runs, variant, noise, kind).values()))[0]


def paired_difference(runs: list[dict], a: str, b: str, noise: float, kind: str) -> dict[str, Any]:
    """Top-1 of variant a minus variant b at one noise, per seed (paired), with mean and std."""
    va, vb = _per_seed(runs, a, noise, kind), _per_seed(runs, b, noise, kind)
    diff = {s: va[s] - vb[s] for s in sorted(va) if s in vb}
    mean, std = _mean_std(list(diff.values()))
    return {"mean": mean, "std": std, "per_seed": diff, "noise": noise, "probe": kind}


# ---------------------------------------------------------------------------- verdicts


def objective_verdict(runs: list[dict], cfg: CompareConfig) -> dict:
    """The claims: JEPA >= 20 points above random init without noise; >= 10 above MAE at the strongest noise, losing less to it."""
    lo, hi = min(cfg.levels()), max(cfg.levels())
    kind = cfg.probes[0]
    gap = paired_difference(runs, "jepa", "mae", hi, kind)
    over_random = paired_difference(runs, "jepa", "random", lo, kind)
    drop = {v: _top1(runs, v, lo, kind) - _top1(runs, v, hi, kind) for v in ("jepa", "mae")}
    targets = {
        "gap_at_strongest_noise >= 0.10": bool(gap["mean"] >= 0.10),
        "jepa drops less with noise than mae": bool(drop["jepa"] < drop["mae"]),
    }
    if cfg.random_baseline:
        targets["jepa_minus_random_at_no_noise >= 0.20"] = bool(over_random["mean"] >= 0.20)
    return {
        "headline_probe": kind,
        "jepa_minus_random_at_no_noise": over_random,
        "gap_at_strongest_noise": gap,
        "gap_at_strongest_noise_by_probe": {
            k: paired_difference(runs, "jepa", "mae", hi, k)["mean"] for k in cfg.probes
        },
        "drop_from_weakest_to_strongest_noise": drop,
        "targets": targets,
        "expectation": "JEPA >= 0.20 above random init at the weakest noise, >= 0.10 above MAE at the strongest, and loses less accuracy to noise than MAE",
        "expectation_met": all(targets.values()),
    }


def ema_verdict(runs: list[dict], cfg: CompareConfig) -> dict:
    """The claim: without EMA the effective rank falls toward 1 (collapse); with EMA it does not."""
    threshold = cfg.pretrain.collapse_rank
    trained = {
        f"{r['variant']}_noise{r['noise']:g}_seed{r.get('seed', 0)}": r
        for r in runs
        if r["variant"] != "random"
    }
    final = {k: r["effective_rank"] for k, r in trained.items()}
    lowest = {
        k: min((c["effective_rank"] for c in r["curves"]), default=math.nan)
        for k, r in trained.items()
    }
    collapsed = {k: v < threshold for k, v in final.items()}
    return {
        "final_effective_rank": final,
        "min_effective_rank": lowest,
        "final_teacher_std": {k: r["teacher_std"] for k, r in trained.items()},
        "collapse_rank_threshold": threshold,
        "expectation": f"without EMA the final effective rank falls below {threshold:g} (toward 1); with EMA it stays above",
        "expectation_met": all(v == k.startswith("no_ema") for k, v in collapsed.items()),
    }


# ---------------------------------------------------------------------------- table


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _pct_seeds(xs: list[float]) -> str:
    """'45.0' for one seed, '45.0 ± 2.1' (mean ± std over seeds) for several."""
    mean, std = _mean_std(xs)
    return _pct(mean) if len(xs) <= 1 else f"{_pct(mean)} ± {100 * std:.1f}"


def objective_table(runs: list[dict], cfg: CompareConfig) -> str:
    """Markdown: probe top-1 (%) per noise level, one column per (variant, probe)."""
    names = [("jepa", "JEPA"), ("mae", "MAE")] + (
        [("random", "random init")] if cfg.random_baseline else []
    )
    cols = [(v, label, k) for k in cfg.probes for v, label in names]
    lines = [
        "| noise | "
        + " | ".join(f"{label} {k}" for _, label, k in cols)
        + f" | JEPA - MAE ({cfg.probes[0]}) |",
        "|---" * (len(cols) + 2) + "|",
    ]
    for noise in cfg.levels():
        cells = [_pct_seeds(list(_per_seed(runs, v, noise, k).values())) for v, _, k in cols]
        gap = paired_difference(runs, "jepa", "mae", noise, cfg.probes[0])
        spread = f" ± {100 * gap['std']:.1f}" if len(gap["per_seed"]) > 1 else ""
        lines.append(
            f"| {noise:g} | " + " | ".join(cells) + f" | {100 * gap['mean']:+.1f}{spread} |"
        )
    chance = next(iter(runs[0]["probe"].values()))["chance"] if runs else math.nan
    steps = run_config(cfg, variants(cfg)[0], 0.0).max_steps
    lines += [
        "",
        f"Probe top-1 accuracy (%) on {scale(cfg.probe_test_videos, cfg.budget, 32)} held-out clips, "
        f"16 classes; majority-class chance {_pct(chance)}%. Pretraining: {steps} steps per run, batch {cfg.pretrain.batch_size}; "
        f"seeds {', '.join(str(s) for s in cfg.seeds)} (mean ± std over seeds where more than one).",
    ]
    return "\n".join(lines) + "\n"


def ema_table(runs: list[dict], cfg: CompareConfig) -> str:
    """Markdown: one row per run with the collapse monitors next to the probe accuracy."""
    head = "| run | noise | seed | final loss (last window) | teacher std | effective rank (first -> final, min) | "
    head += " | ".join(f"{k} top-1 (%)" for k in cfg.probes) + " |"
    lines = [head, "|---" * (6 + len(cfg.probes)) + "|"]
    for r in runs:
        acc = " | ".join(_pct(r["probe"][k]["top1"]) for k in cfg.probes)
        if r["variant"] == "random":
            lines.append(f"| random init | {r['noise']:g} | {r.get('seed', 0)} | | | | {acc} |")
            continue
        ranks = [c["effective_rank"] for c in r["curves"]] or [r["effective_rank"]]
        lines.append(
            f"| {r['label']} | {r['noise']:g} | {r.get('seed', 0)} | {r['final_loss_window']:.4f} | {r['teacher_std']:.4f} | "
            f"{ranks[0]:.2f} -> {r['effective_rank']:.2f}, {min(ranks):.2f} | {acc} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_objectives(runs: list[dict], cfg: CompareConfig, path: Path) -> None:
    """Probe accuracy vs noise strength: one colour per objective, one line style per probe."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    levels = list(cfg.levels())
    colours = {"jepa": "tab:blue", "mae": "tab:orange", "random": "tab:gray"}
    labels = {"jepa": "JEPA", "mae": "MAE", "random": "random init"}
    for variant, colour in colours.items():
        if variant == "random" and not cfg.random_baseline:
            continue
        for kind, style in zip(cfg.probes, ("-", "--")):
            stats = [_mean_std(list(_per_seed(runs, variant, x, kind).values())) for x in levels]
            ax.errorbar(
                levels,
                [100 * m for m, _ in stats],
                yerr=[100 * sd for _, sd in stats],
                fmt=style,
                marker="o",
                capsize=3,
                color=colour,
                label=f"{labels[variant]} ({kind})",
            )
    chance = next(iter(runs[0]["probe"].values()))["chance"] if runs else 1 / 16
    ax.axhline(
        100 * chance, color="black", linestyle=":", linewidth=1, label="chance (majority class)"
    )
    ax.set(xlabel="nuisance noise strength", ylabel="probe top-1 accuracy (%)", ylim=(0, 100))
    ax.set_title("Frozen probe vs noise, equal budget (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ema(runs: list[dict], cfg: CompareConfig, path: Path) -> None:
    """Three panels: teacher std and effective rank over training, and probe accuracy per run."""
    from matplotlib.ticker import ScalarFormatter

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {"ema": "tab:blue", "no_ema": "tab:red", "random": "tab:gray"}
    short = {"ema": "EMA", "no_ema": "momentum 0", "random": "random init"}
    styles = dict(zip(cfg.levels(), ("-", "--", ":", "-.") * 4))
    # 1-2. collapse monitors over training: colour = variant, line style = noise strength
    for r in runs:
        if r["variant"] == "random":
            continue
        steps = [c["step"] for c in r["curves"]]
        kw = dict(color=colours[r["variant"]], linestyle=styles[r["noise"]])
        label = f"{r['label']}, noise {r['noise']:g}, seed {r.get('seed', 0)}"
        axes[0].plot(steps, [c["teacher_std"] for c in r["curves"]], label=label, **kw)
        axes[1].plot(steps, [c["effective_rank"] for c in r["curves"]], label=label, **kw)
    axes[0].set(xlabel="step", ylabel="teacher embedding std", title="Teacher std (0 = constant)")
    axes[0].set_ylim(bottom=0)
    axes[1].set(xlabel="step", ylabel="effective rank", title="Effective rank (1 = collapse)")
    axes[1].set_yscale("log")
    axes[1].set_ylim(bottom=1)
    axes[1].yaxis.set_major_formatter(ScalarFormatter())
    axes[1].axhline(cfg.pretrain.collapse_rank, color="black", linestyle=":", linewidth=1)
    axes[0].legend(fontsize=7)
    # 3. frozen probe accuracy of every run, next to the monitors
    width = 0.8 / len(cfg.probes)
    for i, kind in enumerate(cfg.probes):
        xs = [j + (i - (len(cfg.probes) - 1) / 2) * width for j in range(len(runs))]
        axes[2].bar(xs, [100 * r["probe"][kind]["top1"] for r in runs], width, label=kind)
    chance = next(iter(runs[0]["probe"].values()))["chance"] if runs else 1 / 16
    axes[2].axhline(
        100 * chance, color="black", linestyle=":", linewidth=1, label="chance (majority class)"
    )
    names = [f"{short[r['variant']]}\nnoise {r['noise']:g}\nseed {r.get('seed', 0)}" for r in runs]
    axes[2].set_xticks(range(len(runs)), names, fontsize=7)
    axes[2].set(ylabel="probe top-1 accuracy (%)", title="Frozen probe", ylim=(0, 100))
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
