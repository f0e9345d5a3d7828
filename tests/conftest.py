"""Test-wide settings: headless rendering, and one torch thread (the models are tiny, and extra
threads only fight over the CI machine's two cores)."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

torch.set_num_threads(1)
