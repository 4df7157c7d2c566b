"""What every script's command line shares: a parser whose errors are one line, argument types, `--config` replay,
and `run_main`, which turns the errors a user can fix into one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from typing import Callable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


# Every error type whose message is one line for the user (what, where, what to do): printed, exit code 2.
_USER_ERRORS = {"data.errors": "DataError", "models.loading": "ModelError", "models.tasks": "MonitorError",
                "trainer.checkpoint": "CheckpointError", "trainer.run_folder": "RunFolderError"}


def user_errors() -> tuple[type[BaseException], ...]:
    """The user errors of the modules imported so far (one not imported cannot have raised its error), so that a
    light script (predict.py) never imports the training side to catch its errors."""
    return UsageError, *(getattr(sys.modules[m], name) for m, name in _USER_ERRORS.items() if m in sys.modules)


class ArgumentError(UsageError):
    """A flag argparse refused; printed as `<prog>: error: <message> (see <prog> --help)`."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{message} (see {prog} --help)")
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse whose errors are raised, not printed with a usage dump: `run_main` prints them as one line (what was
    wrong and where to look), and a caller that parses flags of its own making (a sweep's trial) can catch them."""

    def error(self, message: str):
        raise ArgumentError(self.prog, message)


def _number(kind, accept, expected: str):
    """An argparse type: `kind(text)` that `accept` takes (NaN never compares true, so it is refused)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: 0 < v < math.inf, "a positive number")
non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
fraction = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
seed = _number(int, lambda v: 0 <= v < 2**32, "an integer in [0, 4294967295]")  # what numpy, torch, random take


def probability_or_none(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) or 'none', got {text!r}")
    return value


def existing_dir(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return text


def comma_list(choices):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        unknown = [t for t in items if t not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"unknown value {','.join(unknown) or repr(text)}: choose from "
                                             f"{', '.join(choices)} (comma-separated)")
        return items
    return parse


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None, extras: tuple[str, ...] = (),
               replaced_together: tuple[str, ...] = ()):
    """`parser.parse_args(argv)`, where `--config FILE` (an hparams.yaml a run wrote) supplies flags that the command
    line does not give. Keys of the file that are not flags must be in `extras` (what a run records besides its
    flags: versions, git commit, ...); any other key is an error. Flags in `replaced_together` (a data source) are
    taken from the command line alone when it gives any of them. The file's run name and resume target are not
    reused: a re-run is a new run."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    try:
        with open(path, encoding="utf-8") as f:
            saved = load_yaml(f.read(), f"--config {path}") or {}
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values, like a run's hparams.yaml")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.default != argparse.SUPPRESS}
    unknown = [k for k in saved if k not in actions and k not in extras]
    if unknown:
        raise UsageError(f"--config {path}: {', '.join(map(str, unknown))} is not a flag of {parser.prog}; remove it "
                         "from the file")
    defaults = parser.parse_args([])
    given = {dest for dest in actions if getattr(args, dest) != getattr(defaults, dest, None)}
    skip = {"config", "run_name", "resume", "help"} | (set(replaced_together) if given & set(replaced_together)
                                                       else set())
    tokens = []
    for dest, value in saved.items():
        if dest not in actions or dest in skip or value is None or value is False:
            continue
        action = actions[dest]
        flag = action.option_strings[-1]
        if action.nargs == 0:  # store_true: a YAML boolean, never a string or a number that looks like one
            if not isinstance(value, bool):
                raise UsageError(f"--config {path}: {dest}: {value!r} is not a boolean; write true or false")
            tokens.append(flag)
        else:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            tokens.append(f"{flag}={text}")
    return parser.parse_args(tokens + list(argv if argv is not None else sys.argv[1:]))


def load_yaml(text: str, where: str):
    """YAML as `yaml.safe_load` reads it, except that a key given twice in one mapping is an error (safe_load keeps
    the last value without a word), as is anything that is not YAML."""
    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise UsageError(f"{where}: line {key_node.start_mark.line + 1}: {key} is given a second time; keep "
                                 "one (YAML would take the last without a word)")
            seen.add(key)
        return loader.construct_mapping(node, deep=True)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Strict)
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: not YAML ({str(exc).splitlines()[0]})") from None


def git_commit() -> str | None:
    """The commit of the code being run, when it runs from a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # a job preempted (Slurm, Kubernetes, spot instances), a terminal closed


def exit_code(signal_name: str) -> int:
    """The shell's code for a process ended by that signal: 128 + its number (SIGTERM 143, SIGHUP 129)."""
    import signal

    return 128 + signal.Signals[signal_name].value


@contextlib.contextmanager
def on_sigterm(callback: Callable[[str], None]):
    """Within the block, SIGTERM and SIGHUP call `callback(name)` instead of ending the process at once, so that the
    work under way can stop cleanly; the previous handlers are put back after. Only the main thread can take
    signals: elsewhere the block runs unchanged."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {name: signal.signal(getattr(signal, name), lambda signum, frame: callback(signal.Signals(signum).name))
                for name in STOP_SIGNALS}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


_HARD_EXIT = False
EXIT_GRACE_S = 20.0


def exit_hard_after_output() -> None:
    """Ask `exit` to end the process as soon as its output is out (a tracker hung: its threads and exit handlers
    may never return)."""
    global _HARD_EXIT
    _HARD_EXIT = True


def exit(code: int) -> None:
    """End the script with `code`. Exit handlers (W&B's among them) get `EXIT_GRACE_S` seconds; after that, or at
    once when a tracking backend hung, the process ends regardless, so it never outlives its last line by long."""
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    if _HARD_EXIT:
        os._exit(code)
    watchdog = threading.Timer(EXIT_GRACE_S, os._exit, args=(code,))
    watchdog.daemon = True
    watchdog.start()
    sys.exit(code)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a script's `main`, turning the errors a user can fix into one line on stderr and exit code 2."""
    try:
        return main(argv)
    except user_errors() as exc:
        prefix = f"{exc.prog}: " if isinstance(exc, ArgumentError) else ""
        print(f"{prefix}error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) before the run started; nothing was recorded", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:  # SIGTERM before training began (trainer.Interrupted), or anything else: raised
        interrupted = getattr(sys.modules.get("trainer.trainer"), "Interrupted", None)
        if interrupted is None or not isinstance(exc, interrupted):
            raise
        print(f"interrupted ({exc.signal_name}) before the run started; nothing was recorded", file=sys.stderr)
        return exit_code(exc.signal_name)
