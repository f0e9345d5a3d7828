"""Benchmark one pretraining step: clips/s, tokens/s, ms/step, peak memory, FLOPs and utilisation.

    python scripts/bench_pretrain.py --config configs/cpu-small.yaml
    python scripts/bench_pretrain.py --config configs/vitl16.yaml --steps 20      # on a GPU: MFU in bf16

Measures the real training step (masks, teacher, student, predictor, backward, AdamW, EMA) on
clips already in memory, so data loading is excluded. FLOPs come from torch.utils.flop_counter,
counted on the eager model (also under --compile); utilisation divides achieved FLOP/s by the
matmul rate measured in the same run (fp32 on CPU, bf16 on GPU). With activation checkpointing
the counted FLOPs include the recomputed forward passes; `model_tflop_per_step` and `mfu` count
the same step with checkpointing off (no recompute). Writes summary.json into --out.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from vjepa_agent.config import PretrainConfig, from_yaml  # noqa: E402
from vjepa_agent.errors import cli_entry  # noqa: E402
from vjepa_agent.models.layers import Transformer  # noqa: E402
from vjepa_agent.train.pretrain import (  # noqa: E402
    build_model,
    build_optimizer,
    resolve_precision,
    train_step,
)


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


@cli_entry
def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/cpu-small.yaml")
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps (after the warm-up steps)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps first (default 2; 4 with --compile: mask token counts change every "
        "step, so the second step recompiles for dynamic shapes)",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()

    cfg = from_yaml(args.config, PretrainConfig()) if args.config else PretrainConfig()
    if args.batch_size:
        cfg.batch_size = args.batch_size
    warmup = args.warmup if args.warmup is not None else (4 if args.compile else 2)
    cfg.validate()
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.mixed_precision))
    device = accelerator.device
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)  # eager, with Accelerate's autocast on its forward
    if args.compile:  # last, as Accelerate does: the compiled graph includes the autocast
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
    for step in range(args.steps + warmup):
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
    summary = {
        "config": args.config,
        "torch": torch.__version__,
        "compiled": args.compile,
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for k, v in summary.items():
        if k != "ms_per_step_all":
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    print(out / "summary.json")


if __name__ == "__main__":
    main()
