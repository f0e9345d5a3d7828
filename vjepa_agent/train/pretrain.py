"""The video pretraining loop (Accelerate): one CPU, many GPUs, many machines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from vjepa_agent import checkpoint as ckpt
from vjepa_agent import schedules
from vjepa_agent.config import PretrainConfig, save_yaml
from vjepa_agent.data.video import collate_clips
from vjepa_agent.errors import UserError
from vjepa_agent.masking import mask_generator, sample_masks
from vjepa_agent.metrics import effective_rank, embedding_std
from vjepa_agent.train.data import make_loader
from vjepa_agent.train.tracking import check_tracker, log_with, start_tracking

log = logging.getLogger("vjepa_agent.pretrain")


# ---------------------------------------------------------------------------- builders


def build_dataset(cfg: PretrainConfig):
    """The configured video source: a folder/CSV of videos, or the embedded synthetic videos."""
    if cfg.data is None:
        from vjepa_agent.data.synthetic import SyntheticVideoDataset

        return SyntheticVideoDataset(
            num_videos=cfg.synthetic_videos,
            frames_per_clip=cfg.frames_per_clip,
            size=cfg.crop_size,
            seed=cfg.seed,
            noise=cfg.synthetic_noise,
            object_scale=cfg.synthetic_object_scale,
        )
    if (Path(cfg.data) / "meta.json").is_file() and (Path(cfg.data) / "chunks").is_dir():
        from vjepa_agent.data.rollouts import RolloutClipDataset

        return RolloutClipDataset(
            cfg.data, frames_per_clip=cfg.frames_per_clip, crop_size=cfg.crop_size
        )
    from vjepa_agent.data.video import VideoClipDataset

    return VideoClipDataset(
        cfg.data,
        frames_per_clip=cfg.frames_per_clip,
        frame_step=cfg.frame_step,
        fps=cfg.fps,
        crop_size=cfg.crop_size,
        augment=True,
        crop_scale=cfg.crop_scale,
        crop_aspect=cfg.crop_aspect,
        seed=cfg.seed,
    )


def build_model(cfg: PretrainConfig) -> torch.nn.Module:
    """JEPA (latent prediction) or MAE (pixel reconstruction), same encoder and masks."""
    if cfg.objective == "mae":
        from vjepa_agent.mae import MAE

        return MAE(cfg)
    from vjepa_agent.jepa import JEPA

    return JEPA(cfg)


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and 1-D parameters."""
    decay, no_decay = [], []
    for module in model.trainable_modules():
        for p in module.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "apply_wd": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
    ]
    # fused: the kernel takes an on-device `found_inf` flag and skips the whole update when it is
    # set (weights, moments and step count), which is how train_step skips non-finite steps
    # without a host sync
    return torch.optim.AdamW(groups, lr=cfg.start_lr, betas=cfg.betas, fused=True)


def resolve_precision(choice: str) -> str:
    """'auto' -> bf16 on a CUDA device that supports it, fp32 ('no') elsewhere."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


class SigtermFlag:
    """Set when the process receives SIGTERM (a preempted job): the loop checkpoints and stops."""

    def __init__(self):
        self.raised = False
        try:
            signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. notebooks); no preemption handling
            pass

    def _handler(self, signum, frame):
        self.raised = True


# ---------------------------------------------------------------------------- the step


def train_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    micro_batches: list[torch.Tensor],
    cfg: PretrainConfig,
    step: int,
    momentum: float,
    poison_grads: bool = False,
) -> dict[str, Any]:
    """One optimizer step over micro-batches of video (B, C, T, H, W), then the EMA update.

    A non-finite loss or grad norm (on any rank) skips the update, optimizer and EMA alike,
    by masking on the device: `bad` comes back as a 0-d tensor (1. = skipped). Loss, grad norm
    and `bad` are device tensors: reading them forces a host sync, which the loop does only at
    log and checkpoint steps. `poison_grads` overwrites the gradients with NaN (a test hook).
    """
    core = accelerator.unwrap_model(model)
    loss, dropped = torch.zeros((), device=accelerator.device), 0
    for micro, video in enumerate(micro_batches):
        # 1. masks are a pure function of (seed, step, rank, micro-batch)
        video = video.to(accelerator.device, non_blocking=True)
        gen = mask_generator(cfg.seed, step, accelerator.process_index, micro)
        grid = core.student.grid(video.shape)
        masks = [sample_masks(m, grid, video.shape[0], gen) for m in cfg.masks]
        dropped += sum(m.dropped for m in masks)
        masks = [m.to(accelerator.device) for m in masks]
        # 2. forward (teacher under no_grad, student + predictor) and backward; sync on the last
        last = micro == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            result = model(video, masks)
            accelerator.backward(result["loss"] / len(micro_batches))
        loss += result["loss"].detach() / len(micro_batches)
    if poison_grads:
        for p in params:
            if p.grad is not None:
                p.grad.fill_(float("nan"))
    # 3. clip; a non-finite loss or grad norm on any rank marks the step bad on every rank
    if cfg.grad_clip is not None:
        grad_norm = accelerator.clip_grad_norm_(params, cfg.grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    bad = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
    if accelerator.num_processes > 1:  # the loss is per rank; the grad norm is already shared
        bad = accelerator.reduce(bad, "sum").clamp(max=1.0)
    # 4. step, skipped on the device when bad (fused AdamW; under fp16 the GradScaler sets
    # found_inf itself from the gradients)
    getattr(optimizer, "optimizer", optimizer).found_inf = bad
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # 5. EMA update of the teacher on the unwrapped module; none when bad
    core.update_teacher(momentum, skip=bad)
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "bad": bad,
        "dropped": dropped,
        "embeddings": result["embeddings"],
    }


# ---------------------------------------------------------------------------- the loop


@dataclass
class LoopState:
    """What the loop carries from step to step.

    The counters of skipped (non-finite) steps are device tensors, read only at log and
    checkpoint steps. `window_losses`: device losses since the last log step or checkpoint;
    `window_earlier`: the window's losses before that checkpoint, as floats (mean over ranks),
    also saved with it, so a resumed run reports the same window averages as an uninterrupted one.
    """

    step: int
    skipped: set[str]  # undecodable files seen so far
    skipped_steps: torch.Tensor
    bad_run: torch.Tensor  # non-finite steps in a row
    bad_since: torch.Tensor  # the step where that run began
    window_earlier: list[float]
    window_losses: list[torch.Tensor] = field(default_factory=list)
    window_rates: list[float] = field(default_factory=list)  # clips/s per log window
    window_steps: int = 0
    window_start: float = 0.0
    data_wait: float = 0.0
    monitors: dict[str, float] = field(
        default_factory=lambda: {"teacher_std": float("nan"), "effective_rank": float("nan")}
    )
    final_loss: float = float("nan")
    final_loss_window: float = float("nan")
    last_saved: int = -1
    stopped_by_signal: bool = False

    @classmethod
    def resumed(cls, state: dict[str, Any], device: torch.device) -> LoopState:
        """The loop state of a checkpoint's training state ({"step": 0} for a fresh run)."""
        return cls(
            step=state["step"],
            skipped=set(state.get("skipped_files", [])),
            skipped_steps=torch.tensor(float(state.get("skipped_steps", 0)), device=device),
            bad_run=torch.tensor(float(state.get("bad_steps_in_a_row", 0)), device=device),
            bad_since=torch.tensor(float(state.get("bad_since_step", 0)), device=device),
            window_earlier=list(state.get("window_losses", [])),
        )


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train, checkpoint, export; returns the summary (also written to out/summary.json)."""
    out, dataset, resume_from, accelerator = start_run(cfg)

    # 1. model and optimizer: identical init on every rank
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    params = [p for m in core.trainable_modules() for p in m.parameters() if p.requires_grad]

    # 2. resume: weights, optimizer and step; the data stream and schedules follow the step
    state = resume_training_state(cfg, accelerator, out, resume_from)
    loop = LoopState.resumed(state, accelerator.device)
    start_step = loop.step
    loader = make_loader(
        dataset,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        start=start_step * cfg.grad_accum * cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=collate_clips,
    )
    batches = iter(loader)
    sigterm = SigtermFlag()
    poison_step = int(os.environ.get("VJEPA_AGENT_TEST_NAN_GRAD_STEP", "0"))  # test hook
    bar = tqdm(
        total=cfg.max_steps,
        initial=start_step,
        disable=not accelerator.is_main_process,
        desc="pretrain",
        dynamic_ncols=True,
    )
    train_start = loop.window_start = time.perf_counter()
    while loop.step < cfg.max_steps:
        # 1. schedules from the global step
        lr, wd, momentum = apply_schedules(optimizer, cfg, loop.step)

        # 2. one optimizer step over grad_accum micro-batches, then the EMA update
        micro_batches = next_micro_batches(batches, cfg.grad_accum, loop)
        poison = loop.step + 1 == poison_step
        args = (accelerator, model, optimizer, params, micro_batches, cfg, loop.step, momentum)
        result = train_step(*args, poison_grads=poison)
        count_step(loop, result)
        bar.update(1)

        # 3. collapse monitors and logging (the only places that read device values)
        logs = monitor_collapse(accelerator, cfg, loop, result["embeddings"])
        log_step = loop.step % cfg.log_every == 0 or loop.step == cfg.max_steps
        periodic = cfg.checkpoint_every > 0 and loop.step % cfg.checkpoint_every == 0
        if log_step or periodic or loop.step % cfg.max_bad_steps == 0:
            check_divergence(cfg, loop, bar)
        if log_step:
            log_window(accelerator, cfg, loop, result, logs, (lr, wd, momentum), out, bar)

        # 4. checkpoint: every N steps, at the end, or on SIGTERM (ranks agree at log steps)
        stop = stop_requested(accelerator, sigterm, log_step)
        if periodic or stop or loop.step == cfg.max_steps:
            save_checkpoint(accelerator, cfg, loop, out)
        if stop:
            loop.stopped_by_signal = True
            accelerator.print(
                f"SIGTERM: saved checkpoint at step {loop.step}; resume with --resume auto"
            )
            break
    bar.close()

    # 5. export weights and write the summary; every rank must hold the same teacher
    return finish_run(accelerator, cfg, core, loop, out, start_step, train_start)


def start_run(cfg: PretrainConfig) -> tuple[Path, Any, Path | None, Accelerator]:
    """Check the config, the run folder and the data before any work, then start Accelerate, the
    run folder (config.yaml), the tracker and logging. Returns (out, dataset, resume_from,
    accelerator)."""
    cfg.validate()
    check_tracker(cfg.tracker, "pretraining")
    out = Path(cfg.out)
    resume_from = ckpt.resolve_resume(cfg.resume, out)
    if cfg.resume is None and ckpt.checkpoint_dirs(out):
        raise UserError(
            f"'{out}' already holds checkpoints of an earlier run; pass --resume auto to continue it "
            "or choose another --out"
        )
    dataset = build_dataset(cfg)  # fails fast on a missing / empty data source

    accelerator = Accelerator(
        mixed_precision=resolve_precision(cfg.mixed_precision),
        log_with=log_with(cfg.tracker),
        project_dir=str(out),
    )
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
    start_tracking(accelerator, cfg.tracker, out)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    return out, dataset, resume_from, accelerator


def resume_training_state(
    cfg: PretrainConfig, accelerator: Accelerator, out: Path, resume_from: Path | None
) -> dict[str, Any]:
    """Load weights and optimizer from the checkpoint to resume from and return its training
    state ({"step": 0} for a fresh run); 'auto' falls back past damaged checkpoints to the newest
    one that loads. metrics.jsonl loses the lines logged after that step."""
    state = {"step": 0}
    if cfg.resume == "auto":
        loaded = ckpt.load_latest_training_state(accelerator, out)
        if loaded is None:
            accelerator.print(f"no checkpoint in {out / 'checkpoints'}; starting from step 0")
        else:
            resume_from, state = loaded
    elif resume_from is not None:
        state = ckpt.load_training_state(accelerator, resume_from)
    if state["step"] > 0:
        accelerator.print(f"resumed from {resume_from} at step {state['step']}")
    if accelerator.is_main_process:
        truncate_metrics(out / "metrics.jsonl", state["step"])
    return state


def apply_schedules(
    optimizer: torch.optim.Optimizer, cfg: PretrainConfig, step: int
) -> tuple[float, float, float]:
    """Set the optimizer's lr and weight decay for `step`; returns (lr, weight decay, EMA momentum)."""
    lr = schedules.lr_at(
        step,
        total=cfg.max_steps,
        warmup=cfg.warmup_steps,
        start_lr=cfg.start_lr,
        lr=cfg.lr,
        final_lr=cfg.final_lr,
        kind=cfg.lr_schedule,
    )
    wd = schedules.cosine_at(
        step, total=cfg.max_steps, start=cfg.weight_decay, end=cfg.final_weight_decay
    )
    momentum = schedules.linear_at(step, total=cfg.max_steps, start=cfg.ema[0], end=cfg.ema[1])
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = wd if group["apply_wd"] else 0.0
    return lr, wd, momentum


def next_micro_batches(batches, count: int, loop: LoopState) -> list[torch.Tensor]:
    """The videos (B, C, T, H, W) of the loader's next `count` batches; the time spent waiting
    for them and the files they skipped go into `loop`."""
    micro_batches = []
    for _ in range(count):
        t0 = time.perf_counter()
        batch = next(batches)
        loop.data_wait += time.perf_counter() - t0
        loop.skipped.update(batch["skipped"])
        micro_batches.append(batch["video"])
    return micro_batches


def count_step(loop: LoopState, result: dict[str, Any]) -> None:
    """Book a finished step: its loss joins the log window, the step count moves on, and the
    skipped-step counters follow `bad` on the device (no host sync)."""
    loop.window_losses.append(result["loss"])
    loop.window_steps += 1
    loop.step += 1
    loop.skipped_steps += result["bad"]
    loop.bad_run = (loop.bad_run + 1) * result["bad"]
    loop.bad_since = torch.where(loop.bad_run == 1, float(loop.step), loop.bad_since)


def monitor_collapse(
    accelerator: Accelerator, cfg: PretrainConfig, loop: LoopState, embeddings: torch.Tensor
) -> dict[str, float]:
    """Every `monitor_every` steps and at the end: the teacher's embedding std and effective rank
    (kept in `loop.monitors` and returned for the log), with a warning below the collapse
    thresholds; {} at the other steps."""
    if not (loop.step % cfg.monitor_every == 0 or loop.step == cfg.max_steps):
        return {}
    loop.monitors = {
        "teacher_std": embedding_std(embeddings),
        "effective_rank": effective_rank(embeddings),
    }
    if accelerator.is_main_process and (
        loop.monitors["teacher_std"] < cfg.collapse_std
        or loop.monitors["effective_rank"] < cfg.collapse_rank
    ):
        log.warning(
            "possible collapse at step %d: teacher std %.4f, effective rank %.2f",
            loop.step,
            loop.monitors["teacher_std"],
            loop.monitors["effective_rank"],
        )
    return dict(loop.monitors)


def check_divergence(cfg: PretrainConfig, loop: LoopState, bar: tqdm) -> None:
    """A one-line error after `max_bad_steps` non-finite steps in a row (reads the counter: a
    host sync)."""
    run_length = int(loop.bad_run)
    if run_length >= cfg.max_bad_steps:
        bar.close()  # so the error is the last line on stderr
        newest = f"step {loop.last_saved}" if loop.last_saved > 0 else "none"
        raise UserError(
            f"training diverged: the loss or gradient norm was non-finite at every step "
            f"from step {int(loop.bad_since)} to step {loop.step} ({run_length} in a row, "
            f"--max-bad-steps {cfg.max_bad_steps}); lower --lr (now {cfg.lr:g}) and "
            f"resume with --resume auto (newest checkpoint: {newest}) or start anew"
        )


def log_window(
    accelerator: Accelerator,
    cfg: PretrainConfig,
    loop: LoopState,
    result: dict[str, Any],
    logs: dict[str, float],
    schedule: tuple[float, float, float],
    out: Path,
    bar: tqdm,
) -> None:
    """Close a log window: the last loss and the window's mean (over ranks), the schedules, the
    rates and the counters go to the tracker and metrics.jsonl (host syncs); a new window starts."""
    lr, wd, momentum = schedule
    losses = loop.window_earlier + window_means(accelerator, loop.window_losses)
    loop.final_loss = losses[-1]
    finite = [x for x in losses if math.isfinite(x)]
    loop.final_loss_window = sum(finite) / len(finite) if finite else float("nan")
    elapsed = time.perf_counter() - loop.window_start
    clips_per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    loop.window_rates.append(clips_per_step * loop.window_steps / elapsed)
    logs.update(
        {
            "loss": loop.final_loss,
            "loss_avg": loop.final_loss_window,
            "lr": lr,
            "weight_decay": wd,
            "ema_momentum": momentum,
            "grad_norm": float(result["grad_norm"]),
            "clips_per_s": loop.window_rates[-1],
            "data_wait_fraction": loop.data_wait / elapsed,
            "dropped_tokens": result["dropped"],
            "skipped_files": len(loop.skipped),
            "skipped_steps": int(loop.skipped_steps),
        }
    )
    accelerator.log(logs, step=loop.step)
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": loop.step, **logs}) + "\n")
    bar.set_postfix(loss=f"{loop.final_loss:.4f}", clips_s=f"{loop.window_rates[-1]:.1f}")
    loop.window_losses, loop.window_earlier, loop.window_steps = [], [], 0
    loop.window_start, loop.data_wait = time.perf_counter(), 0.0


def stop_requested(accelerator: Accelerator, sigterm: SigtermFlag, log_step: bool) -> bool:
    """SIGTERM was received; with many ranks, on any rank, agreed at log steps only (a collective)."""
    stop = sigterm.raised
    if accelerator.num_processes > 1:
        stop = log_step and bool(
            accelerator.reduce(torch.tensor(float(stop), device=accelerator.device), "sum") > 0
        )
    return stop


def save_checkpoint(
    accelerator: Accelerator, cfg: PretrainConfig, loop: LoopState, out: Path
) -> None:
    """Checkpoint the training state with the loop's counters and the window's losses so far."""
    loop.window_earlier += window_means(accelerator, loop.window_losses)
    loop.window_losses = []
    counters = {
        "skipped_steps": int(loop.skipped_steps),
        "bad_steps_in_a_row": int(loop.bad_run),
        "bad_since_step": int(loop.bad_since),
        "window_losses": loop.window_earlier,
    }
    ckpt.save_training_state(
        accelerator,
        out,
        loop.step,
        {"skipped_files": sorted(loop.skipped), **counters},
        cfg.keep_checkpoints,
    )
    loop.last_saved = loop.step


def finish_run(
    accelerator: Accelerator,
    cfg: PretrainConfig,
    core: torch.nn.Module,
    loop: LoopState,
    out: Path,
    start_step: int,
    train_start: float,
) -> dict[str, Any]:
    """Export the weights (unless stopped by SIGTERM) and write the summary on rank 0; every rank
    must hold the same teacher. Returns the summary."""
    world = accelerator.num_processes
    checksums = gather_object(
        [module_checksum(core.teacher if hasattr(core, "teacher") else core.student)]
    )
    if len(set(checksums)) > 1:
        log.warning("teacher weights differ across ranks: %s", checksums)
    skipped = loop.skipped
    all_skipped = (
        sorted(set().union(*gather_object([sorted(skipped)]))) if world > 1 else sorted(skipped)
    )
    rates = loop.window_rates
    rates = rates[1:] if len(rates) > 2 else rates  # first window warms up
    summary = {
        "steps": loop.step,
        "final_loss": loop.final_loss,  # the last step's loss (mean over ranks)
        "final_loss_window": loop.final_loss_window,  # mean finite loss over the last log window
        "skipped_steps": int(loop.skipped_steps),
        "clips_per_s": statistics.median(rates) if rates else float("nan"),
        "teacher_std": loop.monitors["teacher_std"],
        "effective_rank": loop.monitors["effective_rank"],
        "skipped_files": len(all_skipped),
        "skipped_paths": all_skipped[:100],
        "world_size": world,
        "teacher_checksums": checksums,
        "objective": cfg.objective,
        "train_seconds": time.perf_counter() - train_start,
        "resumed_from_step": start_step,
        "stopped_by_signal": loop.stopped_by_signal,
        "last_checkpoint_step": loop.last_saved,
    }
    if accelerator.is_main_process:
        if not loop.stopped_by_signal:
            ckpt.export_pretrained(core, cfg, out / "export", loop.step)
        ckpt.write_json(summary, out / "summary.json")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # also tears down the process group
    if accelerator.is_main_process:
        print(out / "summary.json")
    return summary


def window_means(accelerator: Accelerator, losses: list[torch.Tensor]) -> list[float]:
    """Per-step losses (device scalars) -> floats, each the mean over ranks (a host sync)."""
    if not losses:
        return []
    return accelerator.reduce(torch.stack(losses), "mean").tolist()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop logged lines after `step` (left by a run that died after its last checkpoint)."""
    if not path.is_file():
        return
    keep = [
        line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in keep))


def module_checksum(module: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal only for bit-identical weights."""
    h = hashlib.sha256()
    for name, p in module.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
