"""Test-wide settings: headless rendering, and one torch thread (the models are tiny, and extra
threads only fight over the CI machine's two cores); the `run_script` fixture, which every test
that runs a command in a fresh interpreter uses."""

import os
import socket
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_script(
    script: str | Path,
    *args: object,
    env: dict[str, str] | None = None,
    cwd: str | Path = ROOT,
    timeout: float = 600,
    check: bool = True,
    processes: int = 1,
) -> subprocess.CompletedProcess:
    """Run `python scripts/<script> *args` (or `python -c CODE ...` when `script` is "-c") and
    return the finished process, stdout and stderr as text.

    The child gets this process's environment with OMP_NUM_THREADS=1 and `env` on top, runs in
    `cwd` (the checkout's root) and is killed after `timeout` seconds. `check`: assert exit code
    0, with the end of stderr as the message; pass False to look at a failure. `processes` > 1:
    the script runs under `accelerate launch --multi_gpu` on CPU (DDP over gloo), on a free port.
    """
    target = [script] if str(script).startswith("-") else [str(ROOT / "scripts" / script)]
    if processes > 1:
        launch = "-m accelerate.commands.launch --multi_gpu --num_machines 1 --mixed_precision no"
        launch += f" --dynamo_backend no --num_processes {processes}"
        # a fixed port fails when another run (or its TIME_WAIT) holds it
        target = [*launch.split(), "--main_process_port", str(_free_port()), *target]
        env = {"ACCELERATE_USE_CPU": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, *target, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def run_script():
    """`run_script(script, *args, env=None, cwd=ROOT, timeout=600, check=True, processes=1)`: a
    command in a fresh interpreter (see `_run_script`)."""
    return _run_script
