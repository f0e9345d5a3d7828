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


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train, checkpoint, export; returns the summary (also written to out/summary.json)."""
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
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
    start_tracking(accelerator, cfg.tracker, out)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)

    # 1. model and optimizer: identical init on every rank
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    params = [p for m in core.trainable_modules() for p in m.parameters() if p.requires_grad]

    # 2. resume: weights, optimizer and step; the data stream and schedules follow the step.
    # 'auto' falls back past damaged checkpoints to the newest one that loads.
    state = {"step": 0}
    if cfg.resume == "auto":
        loaded = ckpt.load_latest_training_state(accelerator, out)
        if loaded is None:
            accelerator.print(f"no checkpoint in {out / 'checkpoints'}; starting from step 0")
        else:
            resume_from, state = loaded
    elif resume_from is not None:
        state = ckpt.load_training_state(accelerator, resume_from)
    start_step, skipped = state["step"], set(state.get("skipped_files", []))
    if start_step > 0:
        accelerator.print(f"resumed from {resume_from} at step {start_step}")
    if accelerator.is_main_process:
        truncate_metrics(out / "metrics.jsonl", start_step)

    micro_per_step = cfg.grad_accum
    loader = make_loader(
        dataset,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        world=world,
        start=start_step * micro_per_step * cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=collate_clips,
    )
    batches = iter(loader)
    sigterm = SigtermFlag()
    poison_step = int(os.environ.get("VJEPA_AGENT_TEST_NAN_GRAD_STEP", "0"))  # test hook

    # counters of skipped (non-finite) steps live on the device: read at log / checkpoint steps
    device = accelerator.device
    skipped_steps = torch.tensor(float(state.get("skipped_steps", 0)), device=device)
    bad_run = torch.tensor(float(state.get("bad_steps_in_a_row", 0)), device=device)
    bad_since = torch.tensor(float(state.get("bad_since_step", 0)), device=device)

    clips_per_step = cfg.batch_size * cfg.grad_accum * world
    # window_losses: device losses since the last log step or checkpoint; window_earlier: the
    # window's losses before that checkpoint, as floats (mean over ranks), also saved with it,
    # so a resumed run reports the same window averages as an uninterrupted one
    window_losses, window_earlier = [], list(state.get("window_losses", []))
    window_rates, window_steps = [], 0  # clips/s per log window
    monitors = {"teacher_std": float("nan"), "effective_rank": float("nan")}
    final_loss, final_loss_window = float("nan"), float("nan")
    stopped_by_signal, last_saved = False, -1
    bar = tqdm(
        total=cfg.max_steps,
        initial=start_step,
        disable=not accelerator.is_main_process,
        desc="pretrain",
        dynamic_ncols=True,
    )
    train_start = window_start = time.perf_counter()
    data_wait = 0.0
    step = start_step
    while step < cfg.max_steps:
        # 1. schedules from the global step
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

        # 2. one optimizer step over grad_accum micro-batches, then the EMA update
        micro_batches = []
        for _ in range(micro_per_step):
            t0 = time.perf_counter()
            batch = next(batches)
            data_wait += time.perf_counter() - t0
            skipped.update(batch["skipped"])
            micro_batches.append(batch["video"])
        result = train_step(
            accelerator,
            model,
            optimizer,
            params,
            micro_batches,
            cfg,
            step,
            momentum,
            poison_grads=step + 1 == poison_step,
        )
        window_losses.append(result["loss"])
        window_steps += 1
        step += 1
        bar.update(1)
        skipped_steps += result["bad"]
        bad_run = (bad_run + 1) * result["bad"]
        bad_since = torch.where(bad_run == 1, float(step), bad_since)

        # 3. collapse monitors and logging (the only places that read device values)
        logs = {}
        if step % cfg.monitor_every == 0 or step == cfg.max_steps:
            monitors = {
                "teacher_std": embedding_std(result["embeddings"]),
                "effective_rank": effective_rank(result["embeddings"]),
            }
            logs.update(monitors)
            if accelerator.is_main_process and (
                monitors["teacher_std"] < cfg.collapse_std
                or monitors["effective_rank"] < cfg.collapse_rank
            ):
                log.warning(
                    "possible collapse at step %d: teacher std %.4f, effective rank %.2f",
                    step,
                    monitors["teacher_std"],
                    monitors["effective_rank"],
                )
        log_step = step % cfg.log_every == 0 or step == cfg.max_steps
        periodic = cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0
        if log_step or periodic or step % cfg.max_bad_steps == 0:
            run_length = int(bad_run)  # a host sync
            if run_length >= cfg.max_bad_steps:
                bar.close()  # so the error is the last line on stderr
                newest = f"step {last_saved}" if last_saved > 0 else "none"
                raise UserError(
                    f"training diverged: the loss or gradient norm was non-finite at every step "
                    f"from step {int(bad_since)} to step {step} ({run_length} in a row, "
                    f"--max-bad-steps {cfg.max_bad_steps}); lower --lr (now {cfg.lr:g}) and "
                    f"resume with --resume auto (newest checkpoint: {newest}) or start anew"
                )
        if log_step:
            losses = window_earlier + window_means(accelerator, window_losses)
            final_loss = losses[-1]
            finite = [x for x in losses if math.isfinite(x)]
            final_loss_window = sum(finite) / len(finite) if finite else float("nan")
            elapsed = time.perf_counter() - window_start
            window_rates.append(clips_per_step * window_steps / elapsed)
            logs.update(
                {
                    "loss": final_loss,
                    "loss_avg": final_loss_window,
                    "lr": lr,
                    "weight_decay": wd,
                    "ema_momentum": momentum,
                    "grad_norm": float(result["grad_norm"]),
                    "clips_per_s": window_rates[-1],
                    "data_wait_fraction": data_wait / elapsed,
                    "dropped_tokens": result["dropped"],
                    "skipped_files": len(skipped),
                    "skipped_steps": int(skipped_steps),
                }
            )
            accelerator.log(logs, step=step)
            if accelerator.is_main_process:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, **logs}) + "\n")
            bar.set_postfix(loss=f"{final_loss:.4f}", clips_s=f"{window_rates[-1]:.1f}")
            window_losses, window_earlier, window_steps = [], [], 0
            window_start, data_wait = time.perf_counter(), 0.0

        # 4. checkpoint: every N steps, at the end, or on SIGTERM (ranks agree at log steps)
        stop = sigterm.raised
        if world > 1:
            stop = log_step and bool(
                accelerator.reduce(torch.tensor(float(stop), device=accelerator.device), "sum") > 0
            )
        if periodic or stop or step == cfg.max_steps:
            window_earlier += window_means(accelerator, window_losses)
            window_losses = []
            counters = {
                "skipped_steps": int(skipped_steps),
                "bad_steps_in_a_row": int(bad_run),
                "bad_since_step": int(bad_since),
                "window_losses": window_earlier,
            }
            ckpt.save_training_state(
                accelerator,
                out,
                step,
                {"skipped_files": sorted(skipped), **counters},
                cfg.keep_checkpoints,
            )
            last_saved = step
        if stop:
            stopped_by_signal = True
            accelerator.print(
                f"SIGTERM: saved checkpoint at step {step}; resume with --resume auto"
            )
            break
    bar.close()

    # 5. export weights and write the summary; every rank must hold the same teacher
    checksums = gather_object(
        [module_checksum(core.teacher if hasattr(core, "teacher") else core.student)]
    )
    if len(set(checksums)) > 1:
        log.warning("teacher weights differ across ranks: %s", checksums)
    all_skipped = (
        sorted(set().union(*gather_object([sorted(skipped)]))) if world > 1 else sorted(skipped)
    )
    rates = window_rates[1:] if len(window_rates) > 2 else window_rates  # first window warms up
    summary = {
        "steps": step,
        "final_loss": final_loss,  # the last step's loss (mean over ranks)
        "final_loss_window": final_loss_window,  # mean finite loss over the last log window
        "skipped_steps": int(skipped_steps),
        "clips_per_s": statistics.median(rates) if rates else float("nan"),
        "teacher_std": monitors["teacher_std"],
        "effective_rank": monitors["effective_rank"],
        "skipped_files": len(all_skipped),
        "skipped_paths": all_skipped[:100],
        "world_size": world,
        "teacher_checksums": checksums,
        "objective": cfg.objective,
        "train_seconds": time.perf_counter() - train_start,
        "resumed_from_step": start_step,
        "stopped_by_signal": stopped_by_signal,
        "last_checkpoint_step": last_saved,
    }
    if accelerator.is_main_process:
        if not stopped_by_signal:
            ckpt.export_pretrained(core, cfg, out / "export", step)
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
