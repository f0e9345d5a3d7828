"""Convert an official V-JEPA / V-JEPA 2 checkpoint: the `vjepa-convert` command, run from a checkout without installing.

    python scripts/convert_checkpoint.py --checkpoint vitl.pt --size large --out runs/vitl-official

The body is vjepa_agent/cli/convert_checkpoint.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.convert_checkpoint import main  # noqa: E402

if __name__ == "__main__":
    main()
