"""JEPA vs MAE across noise levels, and the EMA ablation: the `vjepa-compare` command, run from a checkout without installing.

    python scripts/compare_objectives.py --out runs/compare

The body is vjepa_agent/cli/compare_objectives.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.compare_objectives import main  # noqa: E402

if __name__ == "__main__":
    main()
