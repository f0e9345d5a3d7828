"""The configs of the evaluation commands: `vjepa-probe` (`ProbeConfig`) and `vjepa-compare`
(`CompareConfig`).

They sit apart from `probe.py` and `compare.py`, which import torch, so that the commands parse
their flags and answer `--help` without loading it; both modules re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vjepa_agent.config import EncoderConfig, PredictorConfig, PretrainConfig
from vjepa_agent.errors import require

ProbeKind = Literal["attentive", "linear"]


@dataclass
class ProbeConfig:
    """`vjepa-probe` (`scripts/eval_probe.py`): frozen-encoder probe on labelled videos."""

    encoder: str | None = None
    """Exported encoder folder (out/export) or a training run folder (required)."""
    data: str | None = None
    """Folder with one sub-folder per class, or a 'path label' CSV; None = the labelled synthetic videos."""
    probe: ProbeKind = "attentive"
    """attentive (one learned query cross-attending over all tokens) or linear (mean-pooled tokens)."""
    which: Literal["teacher", "student"] = "teacher"
    """Weights to probe: teacher (the exported encoder: EMA teacher for JEPA) or student."""
    out: Path = Path("runs/probe")
    """Output folder: summary.json, config.yaml."""
    val_fraction: float = 0.2
    """Fraction of each class held out for validation (--data only)."""
    frames_per_clip: int | None = None
    """Frames per clip; None = the encoder's pretraining value."""
    crop_size: int | None = None
    """Clip side in pixels; None = the encoder's pretraining value."""
    frame_step: int = 4
    """Stride between sampled frames (--data only; ignored when fps is set)."""
    fps: float | None = None
    """Sample clips at this frame rate instead of a fixed stride (--data only)."""
    synthetic_train: int = 1024
    """Synthetic probe-training videos (without --data)."""
    synthetic_val: int = 512
    """Synthetic probe-test videos (without --data; a disjoint split)."""
    synthetic_noise: float = 0.0
    """Nuisance strength in [0, 1] of the synthetic videos."""
    epochs: int = 40
    """Probe training epochs over the cached features."""
    lr: float | None = None
    """Peak AdamW learning rate; None = 1e-3 (attentive) / 1e-2 (linear)."""
    weight_decay: float = 0.05
    """AdamW weight decay of the probe."""
    batch_size: int = 64
    """Probe training batch size."""
    extract_batch_size: int = 32
    """Clips per encoder forward while caching features."""
    seed: int = 0
    """Seed for the split, the synthetic videos and the probe's initialisation."""
    position: bool = True
    """Also read the main object's position out of the tokens (linear, synthetic videos only)."""

    def validate(self) -> None:
        """Fail in one line before any model is built."""
        require(self.encoder is not None, "pass --encoder with an export folder or a run folder")
        require(
            0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}"
        )
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(
            self.synthetic_train >= 1 and self.synthetic_val >= 1,
            "synthetic_train and synthetic_val must be >= 1",
        )
        require(
            0 <= self.synthetic_noise <= 1,
            f"synthetic_noise must be in [0, 1], got {self.synthetic_noise}",
        )
        if self.data is not None:
            require(
                Path(self.data).exists(),
                f"data path '{self.data}' does not exist; pass a folder with class sub-folders or a 'path label' CSV",
            )


def compare_pretrain_defaults() -> PretrainConfig:
    """The pretraining shared by every compared run: sized for 2 CPU cores (see README)."""
    return PretrainConfig(
        max_steps=1000,
        synthetic_videos=2048,
        batch_size=8,
        frames_per_clip=8,
        crop_size=64,
        encoder=EncoderConfig(dim=96, depth=4, heads=4, patch_size=8),
        predictor=PredictorConfig(dim=64, depth=2, heads=4),
        # The library default (0.998 -> 1.0) is V-JEPA's, made for ~10^5 steps: over 10^3 steps it
        # would leave ~40% of the random initialisation in the probed teacher.
        ema=(0.99, 0.999),
        # VICReg on the student's context tokens (JEPA only; MAE ignores it): without it the
        # teacher's token variance collapses onto the clips' background colour and the probe
        # falls below the random initialisation (docs/video_jepa.md)
        regularizer="vicreg",
        reg_weight=0.1,
        warmup_steps=50,
        log_every=10,
        monitor_every=10,
        checkpoint_every=0,
        keep_checkpoints=1,
    )


@dataclass
class CompareConfig:
    """`vjepa-compare` (`scripts/compare_objectives.py`): JEPA vs MAE across noise levels, or the EMA ablation."""

    out: Path = Path("runs/compare")
    """Output folder: runs/, results.md, compare.png, summary.json."""
    ablate: Literal["ema"] | None = None
    """None = compare the objectives JEPA and MAE; 'ema' = JEPA with the configured EMA vs momentum 0."""
    budget: float = 1.0
    """Scales pretraining steps and all video counts (1 = 11-18 minutes on 2 CPU cores, measured)."""
    noise_levels: tuple[float, ...] | None = None
    """Nuisance strengths in [0, 1]; None = (0, 0.5, 1) for the objectives, (0, 1) for the EMA ablation."""
    probes: tuple[ProbeKind, ...] = ("attentive", "linear")
    """Frozen probes trained on each encoder."""
    probe_train_videos: int = 1024
    """Labelled videos the probes train on (split 'probe_train'; scaled by budget, at least 32)."""
    probe_test_videos: int = 512
    """Labelled videos the probes are scored on (split 'probe_test'; scaled by budget, at least 32)."""
    probe_epochs: int = 40
    """Probe training epochs over the cached features."""
    random_baseline: bool = True
    """Also probe the randomly initialised encoder (the common starting point of every run)."""
    seeds: tuple[int, ...] = (0,)
    """Pretraining seeds (initialisation, data order, masks); every number is reported as mean and std over them."""
    jobs: int | None = None
    """Runs at once, each in its own process; None = one per CPU core without a GPU (single-threaded each), 1 with one."""
    pretrain: PretrainConfig = field(default_factory=compare_pretrain_defaults)
    """The pretraining shared by every run; objective, synthetic_noise, out (and ema) are set per run."""

    def levels(self) -> tuple[float, ...]:
        if self.noise_levels is not None:
            return tuple(self.noise_levels)
        return (0.0, 1.0) if self.ablate == "ema" else (0.0, 0.5, 1.0)

    def validate(self) -> None:
        """Fail in one line before anything is trained."""
        require(self.budget > 0, f"budget must be > 0, got {self.budget}")
        levels = self.levels()
        require(len(levels) >= 1, "pass at least one noise level")
        require(all(0 <= x <= 1 for x in levels), f"noise levels must lie in [0, 1], got {levels}")
        require(len(set(levels)) == len(levels), f"noise levels must be distinct, got {levels}")
        require(len(self.probes) >= 1, "pass at least one probe (attentive, linear)")
        require(self.probe_epochs >= 1, f"probe_epochs must be >= 1, got {self.probe_epochs}")
        require(self.jobs is None or self.jobs >= 1, f"jobs must be >= 1, got {self.jobs}")
        require(len(self.seeds) >= 1, "pass at least one seed")
        require(
            len(set(self.seeds)) == len(self.seeds), f"seeds must be distinct, got {self.seeds}"
        )
        require(
            self.pretrain.data is None,
            "the comparison uses the labelled synthetic videos; leave pretrain.data unset",
        )
        self.pretrain.validate()
