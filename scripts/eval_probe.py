"""Frozen-encoder probe: the `vjepa-probe` command, run from a checkout without installing.

    python scripts/eval_probe.py --encoder runs/pretrain

The body is vjepa_agent/cli/eval_probe.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.eval_probe import main  # noqa: E402

if __name__ == "__main__":
    main()
