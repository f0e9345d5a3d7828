"""Benchmark of one pretraining step: clips/s, tokens/s, ms/step, peak memory, FLOPs and
utilisation (the body of `vjepa-bench`).

Measures the real training step (masks, teacher, student, predictor, backward, AdamW, EMA) on
clips already in memory, so data loading is excluded. FLOPs come from torch.utils.flop_counter,
counted on the eager model (also when compiled); utilisation divides achieved FLOP/s by the
matmul rate measured in the same run (fp32 on CPU, bf16 on GPU). With activation checkpointing
the counted FLOPs include the recomputed forward passes; `model_tflop_per_step` and `mfu` count
the same step with checkpointing off (no recompute).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.flop_counter import FlopCounterMode

from vjepa_agent.config import PretrainConfig
from vjepa_agent.models.layers import Transformer
from vjepa_agent.train.pretrain import build_model, build_optimizer, resolve_precision, train_step


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Measured dense matmul FLOP/s for n x n matrices (median of reps)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(reps + 2):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times[2:])


def sync(device: torch.device) -> None:
    """Wait for queued kernels on an accelerator (CPU work is synchronous)."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def bench_pretrain(
    cfg: PretrainConfig, steps: int = 6, warmup: int | None = None, compile_model: bool = False
) -> dict[str, Any]:
    """Time `steps` training steps after `warmup` untimed ones (default 2; 4 when compiled: mask
    token counts change every step, so the second step recompiles for dynamic shapes); returns
    the summary."""
    warmup = warmup if warmup is not None else (4 if compile_model else 2)
    cfg.validate()
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.mixed_precision))
    device = accelerator.device
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)  # eager, with Accelerate's autocast on its forward
    if compile_model:  # last, as Accelerate does: the compiled graph includes the autocast
        # (dynamic=True fails under activation checkpointing in torch 2.13; the default marks the
        # mask token counts dynamic when they first change)
        model = torch.compile(model)
    params = [p for m in core.trainable_modules() for p in m.parameters() if p.requires_grad]
    enc = cfg.encoder.resolved()
    shape = (cfg.batch_size, enc.in_channels, cfg.frames_per_clip, cfg.crop_size, cfg.crop_size)
    video = torch.randn(shape, device=device)
    tokens = (cfg.frames_per_clip // enc.tubelet_size) * (cfg.crop_size // enc.patch_size) ** 2

    # 1. FLOPs of one step (forward + backward of everything the step runs), on the eager module:
    # a compiled model is not traced under the counter (and its first call would be compilation)
    with FlopCounterMode(display=False) as counter:
        train_step(accelerator, core, optimizer, params, [video], cfg, 0, 0.999)
    flops = counter.get_total_flops()

    # 2. timed steps
    times = []
    for step in range(steps + warmup):
        sync(device)
        t0 = time.perf_counter()
        train_step(accelerator, model, optimizer, params, [video], cfg, step + 1, 0.999)
        sync(device)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times[warmup:])

    # 3. peak memory of the training steps, then the matmul rate of this machine, measured now
    on_accelerator = device.type != "cpu"
    if on_accelerator:
        peak_mem = torch.accelerator.max_memory_allocated(device) / 2**20
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # utilisation is against the matmul rate of the precision the step runs in
    if accelerator.mixed_precision == "bf16":
        rate, rate_kind = matmul_rate(device, torch.bfloat16, 8192, 20), "bf16"
    else:
        rate, rate_kind = matmul_rate(device, torch.float32, 2048, 10), "fp32"

    # 4. model FLOPs: the same step with activation checkpointing off (no recomputed forwards)
    model_flops = flops
    checkpointed = [m for m in core.modules() if isinstance(m, Transformer)]
    checkpointed = [m for m in checkpointed if m.activation_checkpointing]
    if checkpointed:
        for m in checkpointed:
            m.activation_checkpointing = False
        try:
            with FlopCounterMode(display=False) as counter:
                train_step(accelerator, core, optimizer, params, [video], cfg, 0, 0.999)
            model_flops = counter.get_total_flops()
        except torch.OutOfMemoryError:
            model_flops = None
        for m in checkpointed:
            m.activation_checkpointing = True
    return {
        "torch": torch.__version__,
        "compiled": compile_model,
        "device": torch.get_device_module(device).get_device_name(device)
        if on_accelerator
        else f"cpu x{torch.get_num_threads()} threads",
        "mixed_precision": accelerator.mixed_precision,
        "batch_size": cfg.batch_size,
        "tokens_per_clip": tokens,
        "ms_per_step": 1000 * step_s,
        "warmup_steps": warmup,
        "ms_per_step_all": [round(1000 * t, 1) for t in times],
        "clips_per_s": cfg.batch_size / step_s,
        "tokens_per_s": cfg.batch_size * tokens / step_s,
        "tflop_per_step": flops / 1e12,
        "achieved_tflops": flops / step_s / 1e12,
        f"measured_matmul_tflops_{rate_kind}": rate / 1e12,
        "utilisation": flops / step_s / rate,
        "model_tflop_per_step": None if model_flops is None else model_flops / 1e12,
        "mfu": None if model_flops is None else model_flops / step_s / rate,
        "peak_memory_mb": peak_mem,
        "peak_memory_kind": "accelerator max allocated" if on_accelerator else "process max RSS",
    }


# ---- planning ----


def bench_plan(cfg, episodes: int = 2, max_steps: int = 200, calls: int = 200) -> dict[str, Any]:
    """Time plan.py's agent on a trained model (cfg: a PlanConfig with `model` set), quiet and
    beside one busy process, and the library's model call against the plain one on the same
    recorded planner inputs.

    Each condition: one untimed warm-up episode, then `episodes` timed ones of at most
    `max_steps` decisions (`agent.stats()`: ms per decision, encoder / model / planner split);
    then the first `calls` model calls of the planner (start latents, sampled actions)
    replayed, library and plain alternating, medians in ms. The library's call:
    `WorldModel.rollout_nodes` (the folded Markov step, each distinct action prefix once) and
    the objective's heads on those nodes; the plain one: `rollout(plain=True)` (the predictor's
    module forward on every sequence) and the heads on every step. Everything runs on one
    torch thread, as plan.py plans."""
    import subprocess
    import sys
    from pathlib import Path

    from vjepa_agent import plan_run
    from vjepa_agent.threads import torch_threads

    env = plan_run.check_inputs(cfg)
    wm, _ = plan_run.get_world_model(cfg, Path(cfg.out), env)
    wm.eval()
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
    rollout_nodes = wm.rollout_nodes
    contended_run = False  # the quiet condition's calls are recorded; both conditions replay them

    def recording(z, actions):
        if len(recorded) < calls and not contended_run:
            recorded.append((z.clone(), actions.clone()))
        return rollout_nodes(z, actions)

    def condition() -> dict[str, Any]:
        agent = plan_run.make_agent(cfg, wm, env)
        plan_run.run_episode(agent, wm, env, cfg.seed + 99, record=False, max_steps=max_steps)
        agent = plan_run.make_agent(cfg, wm, env)  # fresh timings after the warm-up
        returns = []
        for i in range(episodes):
            agent.reseed(cfg.seed + i)
            ret, *_ = plan_run.run_episode(
                agent, wm, env, cfg.seed + plan_run.EVAL_SEED_OFFSET + i, False, max_steps
            )
            returns.append(ret)
        objective = agent.objective
        times = {"library": [], "plain": []}
        diff, rel, nodes, steps = 0.0, 0.0, [], []
        with torch.no_grad():
            for z, actions in recorded:
                t0 = time.perf_counter()
                node_latents, index = rollout_nodes(z, actions)
                library = objective(wm, node_latents, index)
                t1 = time.perf_counter()
                plain = objective(wm, wm.rollout(z, actions, plain=True))
                t2 = time.perf_counter()
                times["library"].append(t1 - t0)
                times["plain"].append(t2 - t1)
                gap = (library - plain).abs()
                diff = max(diff, float(gap.max()))
                rel = max(rel, float((gap / plain.abs().clamp_min(1.0)).max()))
                nodes.append(len(node_latents))
                steps.append(index.numel())
        ratios = [p / q for p, q in zip(times["plain"], times["library"])]
        return {
            **agent.stats(),
            "returns_capped": returns,
            "model_call_ms_library": 1000 * statistics.median(times["library"]),
            "model_call_ms_plain": 1000 * statistics.median(times["plain"]),
            "model_call_speedup": statistics.median(ratios),
            "imagined_latents_per_call": statistics.median(nodes),
            "imagined_steps_per_call": statistics.median(steps),
            "max_abs_cost_diff_library_vs_plain": diff,
            # float32 sums in another order: relative to the cost (or 1), about 1e-7
            "max_rel_cost_diff_library_vs_plain": rel,
        }

    wm.rollout_nodes = recording  # the agent's calls are recorded, then replayed
    with torch_threads(1):
        quiet = condition()
        contended_run = True
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            contended = condition()
        finally:
            busy.kill()
            busy.wait()
    first = recorded[0]
    return {
        "env": cfg.env,
        "obs": cfg.obs,
        "pixel_encoder": wm.cfg.pixel_encoder if cfg.obs == "pixels" else None,
        "model": str(cfg.model),
        "torch": torch.__version__,
        "threads": 1,
        "cpus": os.cpu_count(),
        "rollout_input": {"start_latents": list(first[0].shape), "actions": list(first[1].shape)},
        "replayed_calls": len(recorded),
        "quiet": quiet,
        "contended": contended,
        "ms_per_action_contended_over_quiet": contended["ms_per_action"] / quiet["ms_per_action"],
    }
