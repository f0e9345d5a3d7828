"""Masked-video JEPA pretraining.

    vjepa-pretrain                                                # synthetic videos, no data needed
    vjepa-pretrain --config vitl16 --data videos.csv --out runs/l16
    vjepa-pretrain --out runs/l16 --resume auto
    accelerate launch -m vjepa_agent.cli.pretrain_video --out runs/l16      # many processes / GPUs
    accelerate launch scripts/pretrain_video.py --out runs/l16              # the same, from a checkout

Every PretrainConfig field is a flag. Bad input, and a run that diverges (`--max-bad-steps`
non-finite steps in a row), stop with a one-line error and exit code 2.
"""

from vjepa_agent.cli import parse
from vjepa_agent.config import PretrainConfig
from vjepa_agent.errors import cli_entry


@cli_entry
def main():
    cfg = parse(PretrainConfig, __doc__)
    from vjepa_agent.train.pretrain import pretrain  # torch loads here, after the flags are read

    pretrain(cfg)


if __name__ == "__main__":
    main()
