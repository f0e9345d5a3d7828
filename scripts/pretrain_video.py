"""Masked-video JEPA pretraining: the `vjepa-pretrain` command, run from a checkout without installing.

    accelerate launch scripts/pretrain_video.py --out runs/l16

The body is vjepa_agent/cli/pretrain_video.py; `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.cli.pretrain_video import main  # noqa: E402

if __name__ == "__main__":
    main()
