"""Run folders: where a run writes, who may write there, and when an existing run may be continued.

A run folder `<output-dir>/<run-name>` is held by one writer at a time: an exclusive `flock` on the folder itself,
which the OS releases when the process ends, however it ends (kill -9 included), so a killed run never leaves it
stuck. The holder records itself in `status.yaml` (pid, host, command, status, step), which names it to a second
writer that is refused.

Resume (`--resume auto|PATH`) is this one mechanism:
- saved: `checkpoints/last/` (weights and trainer state, see `trainer/checkpoint.py`), written every
  `--save-every-n-steps`; `hparams.yaml` (every flag of the run); `status.yaml` (running, finished, failed,
  interrupted).
- compared: every flag in `hparams.yaml` against the new command line, except `MAY_CHANGE_ON_RESUME`; any other
  difference is refused with the list of differing flags.
- refused: a finished run, a run folder holding results but no resumable checkpoint, a checkpoint whose files
  cannot be read, a folder another process is writing. A resume never deletes or overwrites a finished record;
  only a folder that does not exist yet (or is empty) is started afresh.
"""
from __future__ import annotations

import datetime
import errno
import os
import shutil
import socket
import sys
from typing import Any

import yaml

from scripts._cli import UsageError

STATUS_FILE = "status.yaml"
HPARAMS_FILE = "hparams.yaml"
# Flags that say how to watch or where to log, not what is trained: a resumed run may change them.
MAY_CHANGE_ON_RESUME = frozenset({
    "resume", "run_name", "output_dir", "config", "max_epochs", "max_steps", "log_every_n_steps",
    "save_every_n_steps", "no_progress_bar", "num_workers", "compile", "logger", "log_model", "max_examples",
    "wandb_project", "wandb_entity", "wandb_mode", "wandb_tags", "confusion_matrix", "mlflow_experiment",
    "logger_timeout", "run_group",
})
# What a run folder holds once it has recorded anything; a folder with none of these may be started afresh.
RESULTS = ("metrics.csv", "summary.yaml", "report.html", "checkpoints", "tables", "plots")


def check_run_name(name: str) -> str:
    """One plain folder name: no path separator, no `..`, nothing hidden."""
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or os.sep in name or \
            (os.altsep and os.altsep in name) or "\0" in name:
        raise UsageError(f"--run-name {name!r} must be one plain folder name (no '/', no '..', not starting with "
                         "'.'); the run folder is <output-dir>/<run-name>")
    return name


def _lock(path: str, flags: int = os.O_RDONLY):
    """An exclusive, non-blocking flock on `path` (a folder, or with `flags` a file); the open descriptor, or None
    when another process holds it. Closing the descriptor (or the process ending) releases it."""
    import fcntl

    fd = os.open(path, flags, 0o644)  # the mode of a file it creates
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def read_yaml(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _holder(path: str) -> str:
    status = read_yaml(os.path.join(path, STATUS_FILE)) or {}
    if not status.get("pid"):
        return "another process"
    return f"pid {status['pid']} on {status.get('host', '?')} ({status.get('command', '?')})"


class RunFolder:
    """A run folder this process holds. `abandon()` removes a folder this process created when the run never
    started (bad data, a model that does not load); `set_status` records how far the run got."""

    def __init__(self, path: str, fd: int | None, created: bool, created_parent: bool = False) -> None:
        self.path, self._fd, self.created, self.created_parent = path, fd, created, created_parent
        self._status: dict[str, Any] = {}
        self.resume_step: int | None = None
        try:  # what an abandoned resume puts back
            with open(os.path.join(path, STATUS_FILE), "rb") as f:
                self._previous: bytes | None = f.read()
        except OSError:
            self._previous = None

    def set_status(self, status: str, step: int | None = None) -> None:
        if self._fd is None:
            return
        if not self._status:
            self._status = {"pid": os.getpid(), "host": socket.gethostname(),
                            "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:500],
                            "started": datetime.datetime.now().isoformat(timespec="seconds")}
        self._status.update(status=status, updated=datetime.datetime.now().isoformat(timespec="seconds"))
        if step is not None:
            self._status["step"] = int(step)
        target = os.path.join(self.path, STATUS_FILE)
        try:
            with open(f"{target}.tmp", "w", encoding="utf-8") as f:
                yaml.safe_dump(self._status, f, sort_keys=False)
            os.replace(f"{target}.tmp", target)
        except OSError as exc:
            raise UsageError(f"cannot write to the run folder {self.path} ({exc.strerror or exc}); pass an "
                             "--output-dir on a writable disk") from None

    def abandon(self) -> None:
        """The run never started: remove the folder if this process created it, else put its status back; then let
        go of it."""
        if self._fd is not None:
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
                if self.created_parent:
                    shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)
            elif self._status:
                target = os.path.join(self.path, STATUS_FILE)
                if self._previous is None:
                    os.remove(target)
                else:
                    with open(target, "wb") as f:
                        f.write(self._previous)
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _make_dirs(path: str, what: str) -> None:
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"cannot create {what} {path}: {existing} is a file, not a folder; pass an --output-dir "
                         "that is a writable folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {what} {path} ({exc.strerror or exc}); pass an --output-dir that is a "
                         "writable folder") from None


def _hold(path: str, created: bool) -> RunFolder:
    fd = _lock(path)
    if fd is None:
        raise UsageError(f"run folder {path} is being written by {_holder(path)}; wait for it to end, or choose "
                         "another --run-name")
    return RunFolder(path, fd, created)


def create(output_dir: str, run_name: str | None, prefix: str = "") -> RunFolder:
    """A new run folder, created (empty), held and proven writable. Refuses to write into an existing run."""
    created_parent = not os.path.isdir(output_dir)
    if created_parent:
        _make_dirs(output_dir, "the output folder")
    if run_name is not None:
        path = os.path.join(output_dir, check_run_name(run_name))
        if os.path.isdir(path) and os.listdir(path):
            raise UsageError(f"run folder {path} already exists and is not empty; choose another --run-name (or "
                             "--resume it)")
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{path} exists and is not a folder; choose another --run-name")
        created = not os.path.exists(path)
        _make_dirs(path, "the run folder")
        run = _hold(path, created)
    else:
        stamp = prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for suffix in range(1, 10_000):
            path = os.path.join(output_dir, stamp if suffix == 1 else f"{stamp}-{suffix}")
            try:
                os.mkdir(path)  # atomic: two runs started in the same second get different folders
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot create the run folder {path} ({exc.strerror or exc}); pass an --output-dir "
                                 "that is a writable folder") from None
            break
        run = _hold(path, True)
    run.created_parent = created_parent and run.created
    try:
        run.set_status("starting")
    except UsageError:
        run.abandon()
        raise
    return run


def _finished(path: str) -> str | None:
    """How the run in `path` ended, when it ended for good ("finished at step N"); None while it can go on."""
    status = read_yaml(os.path.join(path, STATUS_FILE))
    if status is not None:
        return f"finished at step {status.get('step', '?')}" if status.get("status") == "finished" else None
    return "finished (it has its report.html)" if os.path.isfile(os.path.join(path, "report.html")) else None


def _has_results(path: str) -> list[str]:
    return [name for name in RESULTS if os.path.exists(os.path.join(path, name))]


def differing_flags(saved: dict, args: dict) -> list[str]:
    """`--flag` for every flag whose value differs from the saved run's, except those that may change."""
    def same(a, b):
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return float(a) == float(b)
        return a == b

    return [f"--{key.replace('_', '-')} {saved.get(key)!r} -> {value!r}" for key, value in args.items()
            if key not in MAY_CHANGE_ON_RESUME and key in saved and not same(saved[key], value)]


def _check_checkpoint(checkpoint: str) -> int:
    """Both files of a resumable checkpoint can be read: a damaged one is refused before any model is loaded."""
    from safetensors import safe_open

    from trainer.checkpoint import STATE_FILE, WEIGHTS_FILE, load_state

    try:
        with safe_open(os.path.join(checkpoint, WEIGHTS_FILE), framework="pt") as f:
            f.keys()
        state = load_state(checkpoint)
        if not isinstance(state, dict) or "global_step" not in state:
            raise ValueError(f"{STATE_FILE} holds no trainer state")
        return int(state["global_step"])
    except Exception as exc:  # truncated, empty, a damaged header, a pickle with code: all are one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot resume from {checkpoint}: its files are damaged ({reason[:200]}); resume from "
                         "another checkpoint, or start a new --run-name") from None


def _newest_resumable(output_dir: str) -> str:
    from trainer.checkpoint import find_resumable

    candidates = [os.path.join(output_dir, d) for d in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])]
    resumable = [d for d in candidates if os.path.isdir(d) and find_resumable(d) and not _finished(d)]
    if not resumable:
        raise UsageError(f"--resume auto: no unfinished run in {output_dir} has a resumable checkpoint; pass "
                         "--run-name to start one, with --save-every-n-steps N")
    return max(resumable, key=lambda d: os.path.getmtime(find_resumable(d)))


def open_for_resume(output_dir: str, run_name: str | None, resume: str, args: dict,
                    ) -> tuple[RunFolder, str | None]:
    """(the held run folder, its checkpoint) for `--resume auto|PATH`; the checkpoint is None when `auto` names a
    run folder that does not exist yet, which is then started afresh."""
    from trainer.checkpoint import find_resumable

    if resume == "auto":
        if run_name is None:
            path = _newest_resumable(output_dir)
        else:
            path = os.path.join(output_dir, check_run_name(run_name))
            if not os.path.isdir(path) or not os.listdir(path):
                return create(output_dir, run_name), None
    else:
        if not os.path.isdir(resume):
            raise UsageError(f"--resume {resume}: no such folder; pass a run folder or its checkpoints/last")
        checkpoint = find_resumable(resume)
        path = resume
        if checkpoint is not None and os.path.normpath(checkpoint) == os.path.normpath(resume):
            path = os.path.dirname(os.path.dirname(os.path.normpath(checkpoint)))  # <run>/checkpoints/<name>
    run = _hold(path, created=False)
    try:
        finished = _finished(path)
        if finished:
            raise UsageError(f"run {path} {finished}; a resume would overwrite its results. To train more, start a "
                             "new run with another --run-name (--model <run>/checkpoints/best starts from its weights)")
        checkpoint = find_resumable(path)
        if checkpoint is None:
            held = _has_results(path)
            what = f"holds {', '.join(held)} but" if held else "has"
            raise UsageError(f"{path} {what} no resumable checkpoint (checkpoints/last, written with "
                             "--save-every-n-steps); nothing to resume and nothing is overwritten: start a new run "
                             "with another --run-name")
        run.resume_step = _check_checkpoint(checkpoint)
        saved = read_yaml(os.path.join(path, HPARAMS_FILE))
        if saved is None:
            raise UsageError(f"cannot resume {path}: its {HPARAMS_FILE} is missing or unreadable, so the flags of the "
                             "run cannot be checked; start a new run with another --run-name")
        differ = differing_flags(saved, args)
        if differ:
            raise UsageError(f"cannot resume {path} with other flags than the run's ({'; '.join(differ)}); pass the "
                             "run's flags (see its hparams.yaml) or start a new --run-name")
        run.set_status("resuming")  # names this process to a second writer, and proves the folder writable
    except BaseException:
        run.release()
        raise
    return run, checkpoint


def open_run(accelerator, output_dir: str, run_name: str | None, resume: str | None = None, args: dict | None = None,
             prefix: str = "") -> tuple[RunFolder | None, str, str | None]:
    """On the main process, create or (with `resume`) reopen the run folder; every process gets its path and the
    checkpoint to resume from, or every process raises the same UsageError. Returns (RunFolder on the main process
    else None, path, checkpoint or None)."""
    from accelerate.utils import broadcast_object_list

    run, message, path, checkpoint = None, None, None, None
    if accelerator.is_main_process:
        try:
            if resume:
                run, checkpoint = open_for_resume(output_dir, run_name, resume, args or {})
            else:
                run = create(output_dir, run_name, prefix)
            path = run.path
        except UsageError as exc:
            message = str(exc)
    shared = [path, checkpoint, message]
    if accelerator.num_processes > 1:
        broadcast_object_list(shared)
    path, checkpoint, message = shared
    if message:
        raise UsageError(message)
    return run, path, checkpoint
