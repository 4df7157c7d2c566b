"""Run folders: where a run writes, who may write there, how a run's end is recorded, and when an existing run may be
continued. `RunFolder` is the one owner of that lifecycle, a context manager:

    with open_run(accelerator, output_dir, run_name, resume, flags, may_change) as run:   # created or reopened, held
        ... load the data and the model: a refusal here abandons the folder (a new one is removed) ...
        run.logger = build_logger(...)
        run.start()                          # status: running; from here the folder is kept, whatever happens
        trainer.fit(...)
    # on leaving, however it is left: the logger is finalized, status.yaml says finished, failed, interrupted or
    # pruned with the step, report.html is written (a finished run), and the lock is let go

A run folder `<output-dir>/<run-name>` is held by one writer at a time: an exclusive `flock` on the folder itself,
which the OS releases when the process ends, however it ends (kill -9 included), so a killed run never leaves it
stuck. The holder records itself in `status.yaml` (pid, host, command, status, step), which names it to a second
writer that is refused; a reader that finds `running` while the lock is free knows the writer died (`read_status`).

Resume (`--resume auto|PATH`) is this one mechanism:
- saved: `checkpoints/last/` (weights and trainer state, see `trainer/checkpoint.py`), written every
  `--save-every-n-steps`; `hparams.yaml` (every flag of the run); `status.yaml`.
- compared: every flag in `hparams.yaml` against the new command line, except those that `may_change`; any other
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
from typing import Any, Callable

import yaml

from tracking.files import first_line, write_text
from trainer.checkpoint import STATE_FILE, WEIGHTS_FILE, find_resumable, load_state
from trainer.trainer import Interrupted

STATUS_FILE = "status.yaml"
HPARAMS_FILE = "hparams.yaml"
# What a run folder holds once it has recorded anything; a folder with none of these may be started afresh.
RESULTS = ("metrics.csv", "summary.yaml", "report.html", "checkpoints", "tables", "plots")
LIVE = ("starting", "resuming", "running")  # what status.yaml says while its writer works


class RunFolderError(ValueError):
    """A run folder that cannot be created, held or continued; the message says what to do instead."""


def check_run_name(name: str, flag: str = "--run-name") -> str:
    """One plain folder name: no path separator, no `..`, nothing hidden."""
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or os.sep in name or \
            (os.altsep and os.altsep in name) or "\0" in name:
        raise RunFolderError(f"{flag} {name!r} must be one plain folder name (no '/', no '..', not starting with "
                             "'.')")
    return name


def lock(path: str, flags: int = os.O_RDONLY):
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


def read_status(path: str) -> dict:
    """A run folder's status.yaml, with `alive`: whether its writer still holds the folder. A status that says the
    run is going on while no process holds the lock was left by a writer that died (kill -9, a lost machine)."""
    status = read_yaml(os.path.join(path, STATUS_FILE)) or {}
    if status.get("status") in LIVE:
        fd = lock(path) if os.path.isdir(path) else None
        status["alive"] = fd is None
        if fd is not None:
            os.close(fd)
    else:
        status["alive"] = False
    return status


def describe_status(status: dict) -> str:
    """`finished at step 804`, `running at step 12 (pid 7 on host)`, `killed while running at step 12 (...)`."""
    state, step = status.get("status", "unknown"), status.get("step")
    text = f"{state}{f' at step {step}' if step is not None else ''}"
    if state in LIVE and not status.get("alive"):
        text = f"killed while {text} (its process is gone)"
    return text


def _holder(path: str) -> str:
    status = read_yaml(os.path.join(path, STATUS_FILE)) or {}
    if not status.get("pid"):
        return "another process"
    return f"pid {status['pid']} on {status.get('host', '?')} ({status.get('command', '?')})"


class RunFolder:
    """A run folder this process holds (`fd`), or its path only on a process that does not write (`fd` None).

    `logger`, `report` (called with the folder's path when the run finished) and `step` (a callable giving the step
    reached) are set by the owner; `outcome` may name how a run that ended normally ended ("pruned")."""

    def __init__(self, path: str, fd: int | None, created: bool, created_parent: bool = False) -> None:
        self.path, self._fd, self.created, self.created_parent = path, fd, created, created_parent
        self.checkpoint: str | None = None  # the resumable checkpoint a resume continues from
        self.resume_step: int | None = None
        self.logger = None
        self.report: Callable[[str], Any] | None = None
        self.step: Callable[[], int] | None = None
        self.outcome: str | None = None
        self.status: str | None = None  # how the run ended, once it has
        self.previous: dict = {}  # a reopened folder's status before this process took it (`read_status`)
        self.logger_hung = False
        self._started = False
        self._status: dict[str, Any] = {}
        try:  # what an abandoned resume puts back
            with open(os.path.join(path, STATUS_FILE), "rb") as f:
                self._previous: bytes | None = f.read()
        except OSError:
            self._previous = None

    @property
    def writes(self) -> bool:
        return self._fd is not None

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
        try:
            write_text(os.path.join(self.path, STATUS_FILE), yaml.safe_dump(self._status, sort_keys=False))
        except OSError as exc:
            raise RunFolderError(f"cannot write to the run folder {self.path} ({exc.strerror or exc}); pass an "
                                 "--output-dir on a writable disk") from None

    def start(self) -> None:
        """The run has begun: from here on the folder is kept, whatever happens."""
        self._started = True
        self.set_status("running")

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self._started:
                self.abandon()
            else:
                self.close(exc)
        finally:
            self.release()

    def close(self, exc: BaseException | None = None) -> None:
        """Record how the run ended (`exc`: what ended it, None for a normal end): the logger is finalized,
        status.yaml updated, and a finished run's report written (it shows the status), in that order."""
        if self.status is not None:
            return
        if exc is None:
            self.status = self.outcome or "finished"
        elif isinstance(exc, (KeyboardInterrupt, Interrupted)):
            self.status = "interrupted"
        else:
            self.status = "failed"
        if self.logger is not None:
            self.logger.finalize({"finished": "success", "pruned": "success"}.get(self.status, self.status))
            self.logger_hung = any(getattr(backend, "hung", False) for backend in self.logger.backends())
        try:
            self.set_status(self.status, self.step() if self.step is not None else None)
        except RunFolderError as error:  # a full disk: the run's end is told on stderr; a reader of the folder finds
            print(f"warning: {error}", file=sys.stderr)  # its writer gone (read_status) and says so
        if self.status in ("finished", "pruned") and self.report is not None and self.writes:
            self.report(self.path)

    def abandon(self) -> None:
        """The run never started: remove the folder if this process created it, else put its status back."""
        if self._fd is None:
            return
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

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def make_dirs(path: str, what: str) -> None:
    """`os.makedirs`, refused in one line when a parent is a file or the disk will not have it."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunFolderError(f"cannot create {what} {path}: {existing} is a file, not a folder; pass an --output-dir "
                             "that is a writable folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create {what} {path} ({exc.strerror or exc}); pass an --output-dir that is a "
                             "writable folder") from None


def _hold(path: str, created: bool) -> RunFolder:
    fd = lock(path)
    if fd is None:
        raise RunFolderError(f"run folder {path} is being written by {_holder(path)}; wait for it to end, or choose "
                             "another --run-name")
    return RunFolder(path, fd, created)


def create(output_dir: str, run_name: str | None, prefix: str = "") -> RunFolder:
    """A new run folder, created (empty), held and proven writable. Refuses to write into an existing run."""
    created_parent = not os.path.isdir(output_dir)
    if created_parent:
        make_dirs(output_dir, "the output folder")
    if run_name is not None:
        path = os.path.join(output_dir, check_run_name(run_name))
        if os.path.isdir(path) and os.listdir(path):
            raise RunFolderError(f"run folder {path} already exists and is not empty; choose another --run-name (or "
                                 "--resume it)")
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunFolderError(f"{path} exists and is not a folder; choose another --run-name")
        created = not os.path.exists(path)
        make_dirs(path, "the run folder")
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
                raise RunFolderError(f"cannot create the run folder {path} ({exc.strerror or exc}); pass an "
                                     "--output-dir that is a writable folder") from None
            break
        run = _hold(path, True)
    run.created_parent = created_parent and run.created
    try:
        run.set_status("starting")
    except RunFolderError:
        run.abandon()
        run.release()
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


def differing_flags(saved: dict, flags: dict, may_change: frozenset[str]) -> list[str]:
    """`--flag` for every flag whose value differs from the saved run's, except those that may change."""
    def same(a, b):
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return float(a) == float(b)
        return a == b

    return [f"--{key.replace('_', '-')} {saved.get(key)!r} -> {value!r}" for key, value in flags.items()
            if key not in may_change and key in saved and not same(saved[key], value)]


def _check_checkpoint(checkpoint: str) -> int:
    """Both files of a resumable checkpoint can be read: a damaged one is refused before any model is loaded."""
    from safetensors import safe_open

    try:
        with safe_open(os.path.join(checkpoint, WEIGHTS_FILE), framework="pt") as f:
            f.keys()
        state = load_state(checkpoint)
        if not isinstance(state, dict) or "global_step" not in state:
            raise ValueError(f"{STATE_FILE} holds no trainer state")
        return int(state["global_step"])
    except Exception as exc:  # truncated, empty, a damaged header, a pickle with code: all are one line
        raise RunFolderError(f"cannot resume from {checkpoint}: its files are damaged ({first_line(exc, limit=200)}); "
                             "resume from another checkpoint, or start a new --run-name") from None


def _newest_resumable(output_dir: str) -> str:
    candidates = [os.path.join(output_dir, d) for d in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])]
    resumable = [d for d in candidates if os.path.isdir(d) and find_resumable(d) and not _finished(d)]
    if not resumable:
        raise RunFolderError(f"--resume auto: no unfinished run in {output_dir} has a resumable checkpoint; pass "
                             "--run-name to start one, with --save-every-n-steps N")
    return max(resumable, key=lambda d: os.path.getmtime(find_resumable(d)))


def reopen(output_dir: str, run_name: str | None, resume: str, flags: dict, may_change: frozenset[str]) -> RunFolder:
    """The held run folder for `--resume auto|PATH`, with its `checkpoint`; the checkpoint is None when `auto` names
    a run folder that does not exist yet, which is then started afresh."""
    if resume == "auto":
        if run_name is None:
            path = _newest_resumable(output_dir)
        else:
            path = os.path.join(output_dir, check_run_name(run_name))
            if not os.path.isdir(path) or not os.listdir(path):
                return create(output_dir, run_name)
    else:
        if not os.path.isdir(resume):
            raise RunFolderError(f"--resume {resume}: no such folder; pass a run folder or its checkpoints/last")
        checkpoint = find_resumable(resume)
        path = resume
        if checkpoint is not None and os.path.normpath(checkpoint) == os.path.normpath(resume):
            path = os.path.dirname(os.path.dirname(os.path.normpath(checkpoint)))  # <run>/checkpoints/<name>
    previous = read_status(path)  # before taking the lock: whether its last writer is alive
    run = _hold(path, created=False)
    run.previous = previous
    try:
        finished = _finished(path)
        if finished:
            raise RunFolderError(f"run {path} {finished}; a resume would overwrite its results. To train more, start "
                                 "a new run with another --run-name (--model <run>/checkpoints/best starts from its "
                                 "weights)")
        checkpoint = find_resumable(path)
        if checkpoint is None:
            held = _has_results(path)
            what = f"holds {', '.join(held)} but" if held else "has"
            raise RunFolderError(f"{path} {what} no resumable checkpoint (checkpoints/last, written with "
                                 "--save-every-n-steps); nothing to resume and nothing is overwritten: start a new run "
                                 "with another --run-name")
        run.resume_step = _check_checkpoint(checkpoint)
        saved = read_yaml(os.path.join(path, HPARAMS_FILE))
        if saved is None:
            raise RunFolderError(f"cannot resume {path}: its {HPARAMS_FILE} is missing or unreadable, so the flags of "
                                 "the run cannot be checked; start a new run with another --run-name")
        differ = differing_flags(saved, flags, may_change)
        if differ:
            raise RunFolderError(f"cannot resume {path} with other flags than the run's ({'; '.join(differ)}); pass "
                                 "the run's flags (see its hparams.yaml) or start a new --run-name")
        run.set_status("resuming")  # names this process to a second writer, and proves the folder writable
    except BaseException:
        run.release()
        raise
    run.checkpoint = checkpoint
    return run


def open_run(accelerator, output_dir: str, run_name: str | None, resume: str | None = None,
             flags: dict | None = None, may_change: frozenset[str] = frozenset(), prefix: str = "") -> RunFolder:
    """On the main process, create or (with `resume`) reopen the run folder and hold it; every process gets a
    `RunFolder` with its path and the checkpoint to resume from (held only on the main process), or every process
    raises the same RunFolderError."""
    from accelerate.utils import broadcast_object_list

    run, message, path, checkpoint = None, None, None, None
    if accelerator.is_main_process:
        try:
            run = reopen(output_dir, run_name, resume, flags or {}, may_change) if resume else \
                create(output_dir, run_name, prefix)
            path, checkpoint = run.path, run.checkpoint
        except RunFolderError as exc:
            message = str(exc)
    shared = [path, checkpoint, message]
    if accelerator.num_processes > 1:
        broadcast_object_list(shared)
    path, checkpoint, message = shared
    if message:
        raise RunFolderError(message)
    if run is None:  # a process that does not write: the path and the checkpoint only
        run = RunFolder(path, None, created=False)
        run.checkpoint = checkpoint
    return run
