"""Experiment trackers through Accelerate: TensorBoard, Weights & Biases, or none.

A loop checks its tracker before any work (`check_tracker`), builds its `Accelerator` with
`log_with=log_with(tracker)` and `project_dir=out`, calls `start_tracking` once, then
`accelerator.log(values, step=step)` at its log steps (a no-op with none, and on ranks > 0), and
`end_tracking` when done.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator

from vjepa_agent.config import Tracker
from vjepa_agent.errors import require_extra


def check_tracker(tracker: Tracker, purpose: str) -> None:
    """A one-line `UserError` naming the extra to install when the tracker's package is missing
    (Accelerate would drop the tracker with a debug message and the run would log nothing).
    `purpose` says who logs: "pretraining"."""
    if tracker == "tensorboard":
        require_extra(
            "tensorboard", "viz", f"{purpose} logs to TensorBoard (--tracker none: no tracker)"
        )
    elif tracker == "wandb":
        require_extra("wandb", "wandb", f"{purpose} logs to Weights & Biases")


def log_with(tracker: Tracker) -> str | None:
    """The `Accelerator(log_with=...)` value of a tracker."""
    return None if tracker == "none" else tracker


def start_tracking(accelerator: Accelerator, tracker: Tracker, out: Path) -> None:
    """Start the run's tracker (on the main process; Accelerate skips the others). TensorBoard
    writes its events under out/tensorboard; a wandb run is named after the run folder, in project
    "vjepa_agent", with its local files under out."""
    if tracker == "tensorboard":
        accelerator.init_trackers("tensorboard")
    elif tracker == "wandb":
        kwargs = {"wandb": {"name": Path(out).name, "dir": str(out)}}
        accelerator.init_trackers("vjepa_agent", init_kwargs=kwargs)


def end_tracking(accelerator: Accelerator) -> None:
    """Flush and close the trackers (the process group stays: the loop may still need it)."""
    for tracker in accelerator.trackers:
        tracker.finish()
