"""Masked-video JEPA pretraining.

    accelerate launch scripts/pretrain_video.py                       # synthetic videos, no data needed
    accelerate launch scripts/pretrain_video.py --config configs/vitl16.yaml --data videos.csv --out runs/l16
    accelerate launch scripts/pretrain_video.py --out runs/l16 --resume auto

Every PretrainConfig field is a flag (`--help`); `--config FILE.yaml` supplies defaults.
Bad input, and a run that diverges (`--max-bad-steps` non-finite steps in a row), stop with a
one-line error and exit code 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vjepa_agent.config import PretrainConfig, load_config  # noqa: E402
from vjepa_agent.errors import cli_entry  # noqa: E402
from vjepa_agent.train.pretrain import pretrain  # noqa: E402


@cli_entry
def main():
    cfg = load_config(PretrainConfig, description=__doc__)
    pretrain(cfg)


if __name__ == "__main__":
    main()
