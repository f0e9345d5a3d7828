"""Benchmark one pretraining step: clips/s, tokens/s, ms/step, peak memory, FLOPs and utilisation.

    vjepa-bench                                    # the cpu-small preset
    vjepa-bench --config vitl16 --steps 20         # on a GPU: MFU in bf16

Measures the real training step (masks, teacher, student, predictor, backward, AdamW, EMA) on
clips already in memory, so data loading is excluded; see vjepa_agent/bench.py for how FLOPs and
utilisation are counted. Writes summary.json into --out.
"""

import argparse
import json
from pathlib import Path

from vjepa_agent.cli import config_help
from vjepa_agent.config import PretrainConfig, from_yaml
from vjepa_agent.errors import cli_entry
from vjepa_agent.presets import config_path


@cli_entry
def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="cpu-small", help=config_help())
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

    cfg = from_yaml(config_path(args.config), PretrainConfig()) if args.config else PretrainConfig()
    if args.batch_size:
        cfg.batch_size = args.batch_size
    from vjepa_agent.bench import bench_pretrain  # torch loads here, after the flags are read

    summary = {"config": args.config, **bench_pretrain(cfg, args.steps, args.warmup, args.compile)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for k, v in summary.items():
        if k != "ms_per_step_all":
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    print(out / "summary.json")


if __name__ == "__main__":
    main()
