"""Training metrics: recorded at every logging step, written as JSON and plotted as PNG next to the adapter.

`MetricsRecorder` is a `transformers.TrainerCallback`; it keeps `trainer.state.log_history`-style entries and
rewrites `<dir>/metrics.json` after every log (rank 0 only, under several processes), so a crashed or interrupted
run still leaves its curve behind. `plot_metrics(history, path)` draws loss and, for DPO, rewards/chosen,
rewards/rejected, rewards/margins, rewards/accuracies, the chosen and rejected log-probs and the policy's entropy
against the step: chosen log-probs falling while reward accuracy climbs is likelihood displacement (the policy
lowers both answers, the rejected one faster), and falling entropy is the policy collapsing onto few tokens.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

DPO_REWARD_KEYS = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
DPO_LOGP_KEYS = ["logps/chosen", "logps/rejected"]
# The panels plot_metrics draws for a DPO run, in order (tests and `palate adapters show` name them).
DPO_PANELS = ["loss", "implicit rewards", "reward accuracy", "log-probs", "policy entropy"]


class MetricsRecorder(TrainerCallback):
    """Collect every log entry; persist them to `path` (JSON) as they arrive."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.history: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            entry = {"step": state.global_step, "epoch": state.epoch, **logs}
            self.history.append(entry)
            if state.is_world_process_zero:  # every rank logs the same (gathered) values; one writes them
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(self.history, indent=1))


class GracefulInterrupt(TrainerCallback):
    """First Ctrl-C: save a checkpoint at the end of the current step and stop; a second Ctrl-C aborts at once.

    `interrupted` tells the job not to register the adapter; the next run of the same command resumes."""

    def __init__(self):
        self.interrupted = False
        self._previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None

    def _handle(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\npalate: Ctrl-C - saving a checkpoint after this step (Ctrl-C again to abort now)", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        """Put the previous SIGINT handler back (also called when training raised)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def final_metrics(history: list[dict]) -> dict:
    """{"train": last training log values + the train summary, "eval": eval_* values} from a log history."""
    train: dict = {}
    evaluation: dict = {}
    for entry in history:
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or key in {"step", "epoch"}:
                continue
            (evaluation if key.startswith("eval_") else train)[key] = value
    return {"train": train, "eval": evaluation}


def _series(history: list[dict], key: str) -> tuple[list, list]:
    points = [e for e in history if key in e and "step" in e]
    return [e["step"] for e in points], [e[key] for e in points]


def plot_metrics(history: list[dict], path: Path, title: str) -> Path:
    """Plot the training curves to a PNG at `path`: loss; for DPO also the implicit rewards, reward accuracy,
    chosen/rejected log-probs and entropy (train lines, held-out eval as red points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e for e in history if "loss" in e]
    has_rewards = any("rewards/margins" in e for e in steps)
    panels = 5 if has_rewards else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels if has_rewards else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot([e["step"] for e in steps], [e["loss"] for e in steps], marker=".", label="train loss")
    evals = [e for e in history if "eval_loss" in e]
    if evals:
        ax.scatter([e["step"] for e in evals], [e["eval_loss"] for e in evals], color="red", label="eval loss", zorder=3)
    ax.set_xlabel("step"), ax.set_title("loss"), ax.legend()
    if has_rewards:
        ax = axes[0][1]
        for key in DPO_REWARD_KEYS[:3]:
            ax.plot(*_series(steps, key), marker=".", label=key)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_xlabel("step"), ax.set_title("implicit rewards"), ax.legend()
        ax = axes[0][2]
        ax.plot(*_series(steps, "rewards/accuracies"), marker=".", label="train")
        eval_x, eval_y = _series(history, "eval_rewards/accuracies")
        if eval_x:
            ax.scatter(eval_x, eval_y, color="red", label="eval", zorder=3)
        ax.set_ylim(0, 1.05), ax.set_xlabel("step"), ax.set_title("reward accuracy"), ax.legend()
        ax = axes[0][3]
        for key in DPO_LOGP_KEYS:
            ax.plot(*_series(steps, key), marker=".", label=key)
            eval_x, eval_y = _series(history, f"eval_{key}")
            if eval_x:
                ax.scatter(eval_x, eval_y, label=f"eval {key}", zorder=3)
        ax.set_xlabel("step"), ax.set_title("log-probs (chosen falling = displacement)"), ax.legend()
        ax = axes[0][4]
        ax.plot(*_series(steps, "entropy"), marker=".", label="train")
        eval_x, eval_y = _series(history, "eval_entropy")
        if eval_x:
            ax.scatter(eval_x, eval_y, color="red", label="eval", zorder=3)
        ax.set_xlabel("step"), ax.set_title("policy entropy"), ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class ProgressReporter(TrainerCallback):
    """Keep `<registry>/.training/<name>.json` (core.training_progress) current: step, loss, ETA. Rank 0 only."""

    def __init__(self, path: Path, name: str, version: int, kind: str):
        self.path, self.fields = Path(path), {"name": name, "version": version, "kind": kind}
        self._started = None
        self._first_step = 0
        self._step = 0
        self._max_steps = None
        self._loss = None

    def write(self, state: str, **fields) -> None:
        """Replace the record: state, the last step and loss seen, and `fields`."""
        from core.training_progress import write_progress

        record = {"step": self._step, "max_steps": self._max_steps, "loss": self._loss, **fields}
        write_progress(self.path, **self.fields, state=state, **record)

    def ended(self, exc: BaseException) -> None:
        """The job ended without registering: Ctrl-C (TrainingInterrupted, KeyboardInterrupt) stops it, anything
        else fails it, with the error."""
        if isinstance(exc, KeyboardInterrupt):
            self.write("stopped")
        else:
            self.write("failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def on_train_begin(self, args, state, control, **kwargs):
        self._started, self._first_step = time.time(), state.global_step  # a resumed run starts past 0
        self._step, self._max_steps = state.global_step, state.max_steps
        if state.is_world_process_zero:
            self.write("training", elapsed_s=0.0, eta_s=None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._step = state.global_step
        elapsed = time.time() - self._started
        done = state.global_step - self._first_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done else None
        self.write("training", elapsed_s=round(elapsed, 1), eta_s=round(eta, 1) if eta is not None else None)

    def on_train_end(self, args, state, control, **kwargs):
        self._step = state.global_step
        if state.is_world_process_zero:
            self.write("evaluating")
