"""JEPA vs pixel reconstruction (MAE) across noise levels, and the EMA-teacher ablation.

    vjepa-compare --out runs/compare                   # JEPA vs MAE at noise 0, 0.5, 1
    vjepa-compare --out runs/ema --ablate ema          # EMA as configured vs momentum 0
    vjepa-compare --out runs/compare_gpu --budget 10   # 10x the steps and videos

Every run pretrains the same encoder and predictor with the same masks, steps, batch and learning
rate on the synthetic 'pretrain' split at one noise strength; its frozen encoder is then probed
(attentive and linear) on 'probe_train' and scored on 'probe_test' at the same strength. Runs go
in parallel processes (--jobs; default one per core, single-threaded, on a CPU); run times are
in docs/video_jepa.md. Shared pretraining settings
are flags under --pretrain (e.g. --pretrain.encoder.dim 192). Writes results.md, compare.png and
summary.json, and prints the path of summary.json last.
"""

from vjepa_agent.cli import parse
from vjepa_agent.config import CompareConfig
from vjepa_agent.errors import cli_entry


@cli_entry
def main():
    cfg = parse(CompareConfig, __doc__)
    from vjepa_agent.objective_comparison import (
        run_compare,  # torch loads here, after the flags are read
    )

    run_compare(cfg)


if __name__ == "__main__":
    main()
