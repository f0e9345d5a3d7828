"""Benchmark one pretraining step: the `vjepa-bench` command, run from a checkout without installing.

    python scripts/bench_pretrain.py --config cpu-small

The body is vjepa_agent/cli/bench_pretrain.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.bench_pretrain import main  # noqa: E402

if __name__ == "__main__":
    main()
