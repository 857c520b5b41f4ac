"""Progress logging and checkpoint bookkeeping for Hugging Face Trainer runs (tasks.train).

The Trainer writes checkpoint-<step>/ with model, optimizer, scheduler and RNG
state, and trainer_state.json last; a checkpoint is complete when that file
parses and names its own step. `Progress` logs step/max_steps, loss and ETA and
adds the wall time spent so far to each checkpoint, so a resumed run reports
the total training time, not only its own share.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transformers import TrainerCallback

from stratos.files import write_json_atomic
from stratos.progress import StageProgress

log = logging.getLogger("tasks.train")
PROGRESS_FILE = "stratos_progress.json"  # per checkpoint: wall time spent up to it


class Progress(TrainerCallback):
    """Logs step/max_steps, loss (or reward) and ETA; records where the run started and the time spent."""

    def __init__(self, previous_seconds: float = 0.0, artifact_key: str = "training-progress"):
        self.previous_seconds = previous_seconds  # wall time of earlier, interrupted runs
        self.bar = StageProgress("training steps", 1, artifact_key, log)  # the run page's progress bar
        self.started = time.perf_counter()
        self.start_step = 0
        self.losses: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step  # > 0 when the Trainer resumed from a checkpoint
        self.started = time.perf_counter()
        if self.start_step:
            log.info("resumed at step %d/%d", state.global_step, state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or ("loss" not in logs and "reward" not in logs):
            return
        if "loss" in logs:
            self.losses.append(float(logs["loss"]))
        done = state.global_step - self.start_step
        eta = self.elapsed() / done * (state.max_steps - state.global_step) if done else float("nan")
        reward = f" reward {logs['reward']:.3f}" if "reward" in logs else ""
        self.bar.show(
            100.0 * state.global_step / max(state.max_steps, 1), force=state.global_step >= state.max_steps
        )
        log.info(
            "step %d/%d loss %.4f%s elapsed %.0fs eta %.0fs",
            state.global_step,
            state.max_steps,
            logs.get("loss", float("nan")),
            reward,
            self.elapsed(),
            eta,
        )

    def on_save(self, args, state, control, **kwargs):
        # Written after the Trainer's own files, so a resumed run can add up wall time.
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        total = self.previous_seconds + self.elapsed()
        write_json_atomic(folder / PROGRESS_FILE, {"step": state.global_step, "wall_time_s": total})


def last_complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint whose trainer_state.json (the Trainer writes it last) parses and matches its step."""
    found = []
    for folder in checkpoints.glob("checkpoint-*"):
        try:
            step = int(folder.name.rsplit("-", 1)[1])
            state = json.loads((folder / "trainer_state.json").read_text())
        except (ValueError, OSError):  # json.JSONDecodeError is a ValueError: a state cut off by a kill
            continue
        if state.get("global_step") == step:
            found.append((step, folder))
    return max(found)[1] if found else None


def previous_wall_time(checkpoint: Path | None) -> float:
    """Wall time the runs before `checkpoint` spent (0 for a fresh run or a checkpoint without the record)."""
    if checkpoint is None or not (checkpoint / PROGRESS_FILE).is_file():
        return 0.0
    return float(json.loads((checkpoint / PROGRESS_FILE).read_text())["wall_time_s"])
