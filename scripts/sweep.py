"""Hyperparameter sweeps with Optuna: every trial is a full train.py run, in its own run folder, with its loggers.

    python scripts/sweep.py --name s1 --n-trials 16 --data-dir ../shared/data/cola --max-epochs 3
    python scripts/sweep.py --name s1 --resume                  # continue a killed sweep, or add a second worker
    python scripts/sweep.py --name s2 --space space.yaml --metric valid/loss --logger wandb --data-dir ...

Flags that sweep.py does not know are train.py's, fixed for every trial (`--data-dir`, `--max-epochs`, `--logger`,
...). The sweep folder `<output-dir>/<name>` holds:

    study.db        the Optuna study (SQLite); several sweep.py processes on one machine may work on it at once
    sweep.yaml      the fixed train.py flags, metric, direction, sampler and pruner; a --resume must agree with them
    space.yaml      the search space (`--space FILE`, else DEFAULT_SPACE)
    trial-0000/...  one train.py run folder per trial: hparams.yaml (with `sweep: {name, trial}`), metrics.csv,
                    summary.yaml (`sweep/trial`; `pruned` for a pruned trial), status.yaml (finished or pruned)
    workers/        a lock file held by each live sweep.py process: a RUNNING trial whose worker's lock is free was
                    killed, and is marked failed and queued again (same parameters, a new trial) by the next process
    report.html     the trials sorted by the metric, the best trial's command, optimisation history, importance

Each trial reports the metric after every validation to the pruner (median by default), which may stop it early; a
pruned trial keeps its run folder. `--n-trials` counts finished (complete or pruned) trials over the whole study,
so a resumed sweep runs only what is missing. A trial that fails (a non-finite loss) is not run again.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import shlex
import socket
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import _cli  # noqa: E402

DEFAULT_SPACE = """\
# The search space of scripts/sweep.py: one entry per train.py flag (its name, dashes or underscores).
#   flag: {low: A, high: B}             a number in [A, B]; an integer when the flag takes integers
#   flag: {low: A, high: B, log: true}  the same, drawn on a log scale; `step: S` draws from a grid instead
#   flag: {choices: [a, b, c]}          one of the values (a plain list means the same)
lr: {low: 1.0e-5, high: 2.0e-4, log: true}
head_lr: {low: 1.0e-5, high: 1.0e-3, log: true}
warmup_ratio: {low: 0.0, high: 0.2}
weight_decay: {low: 0.0, high: 0.1}
batch_size: {choices: [16, 32]}
max_epochs: {low: 2, high: 5}
dropout: {choices: [0.0, 0.1]}
"""
SWEEP_FILE, SPACE_FILE, STUDY_FILE, REPORT_FILE = "sweep.yaml", "space.yaml", "study.db", "report.html"
# train.py flags the sweep sets for each trial; neither fixed nor searched.
CONTROLLED = ("output_dir", "run_name", "resume", "help")
# Recorded in sweep.yaml; a --resume that gives one of them must give the same.
STUDY_SETTINGS = ("metric", "direction", "sampler", "sampler_seed", "pruner", "pruner_startup_trials",
                  "pruner_warmup_epochs")


class TrialFailed(Exception):
    """A trial's run ended in failure (a non-finite loss): the trial is failed and the sweep goes on."""


def build_parser() -> _cli.Parser:
    p = _cli.Parser(prog="sweep.py", allow_abbrev=False, description=(
        "Search train.py's hyperparameters with Optuna. Every trial is a train.py run in <output-dir>/<name>; flags "
        "not listed here are train.py's and are fixed for every trial (python scripts/train.py --help)."))
    p.add_argument("--name", default=None, help="sweep folder name under --output-dir (default: sweep-<timestamp>); "
                   "also the Optuna study's name and the W&B group")
    p.add_argument("--output-dir", default="sweeps", help="where sweep folders go (default: %(default)s)")
    p.add_argument("--space", default=None, metavar="YAML",
                   help="search space file (default: learning rates, warm-up, weight decay, batch size, epochs, "
                        "dropout; written to the sweep folder's space.yaml)")
    p.add_argument("--n-trials", type=_cli.non_negative_int, default=20,
                   help="finished (complete or pruned) trials the study should have; 0 only rewrites the report "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=_cli.positive_float, default=None,
                   help="stop starting trials after this many seconds (default: no limit)")
    p.add_argument("--metric", default=None,
                   help="the metric to optimise, its best value over a trial's validations (default: the runs' "
                        "--monitor, valid/mcc for CoLA)")
    p.add_argument("--direction", choices=["max", "min"], default=None,
                   help="default: --monitor-mode for the monitored metric, else min for a loss and max otherwise")
    p.add_argument("--sampler", choices=["tpe", "random"], default=None, help="(default: tpe)")
    p.add_argument("--sampler-seed", type=_cli.seed, default=None,
                   help="seed of the sampler; each process adds the number of trials already in the study (default: 0)")
    p.add_argument("--pruner", choices=["median", "none"], default=None,
                   help="stop trials whose metric is worse than the median of earlier trials at the same epoch "
                        "(default: median)")
    p.add_argument("--pruner-startup-trials", type=_cli.non_negative_int, default=None,
                   help="finished trials before any is pruned (default: 5, Optuna's)")
    p.add_argument("--pruner-warmup-epochs", type=_cli.non_negative_int, default=None,
                   help="validations of a trial before it may be pruned (default: 0, Optuna's)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep --name (or work on it beside a running sweep.py): trials that were "
                        "running when a process was killed are run again; finished ones are kept")
    return p


SETTING_DEFAULTS = {"sampler": "tpe", "sampler_seed": 0, "pruner": "median", "pruner_startup_trials": 5,
                    "pruner_warmup_epochs": 0}


def train_parser():
    """train.py's own parser, naming sweep.py in its one-line errors; flags must be spelt in full, so that a fixed
    flag and a searched one are never the same flag under two spellings."""
    from scripts import train

    parser = train.build_parser()
    parser.prog, parser.allow_abbrev = "sweep.py", False
    return parser


# --- the search space ----------------------------------------------------------------------------------------------

@dataclass
class Param:
    """One searched train.py flag: a number range (`low`, `high`, `log`, `step`; `integer`) or `choices`."""
    name: str  # the flag's dest: lr, warmup_ratio, ...
    flag: str  # --lr
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    switch: bool = False  # a store_true flag: True gives the flag, False leaves it out

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def tokens(self, value) -> list[str]:
        if self.switch:
            return [self.flag] if value else []
        return [f"{self.flag}={_text(value)}"]


def _text(value) -> str:
    """A value as a command-line word that parses back to the same value (floats in full precision)."""
    if isinstance(value, float):
        return repr(value)
    return "none" if value is None else str(value)


def _number(value):
    """An int or float from YAML; a string such as 1e-5 (YAML 1.1 reads it as text) is read as a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        for kind in (int, float):
            try:
                number = kind(value)
            except ValueError:
                continue
            return number if math.isfinite(number) else None
    return None


def _accepts(action, value) -> tuple[bool, object]:
    """(whether train.py's flag takes `value`, the value it parses to)."""
    import argparse

    try:
        parsed = action.type(_text(value)) if action.type else _text(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False, None
    return (action.choices is None or parsed in action.choices), parsed


def parse_space(space, parser, where: str) -> list[Param]:
    """The `Param`s of a space mapping, checked against train.py's flags; a UsageError names the first problem."""
    if not isinstance(space, dict) or not space:
        raise _cli.UsageError(f"{where}: expected a mapping of train.py flags to search ranges, like "
                              "'lr: {low: 1.0e-5, high: 1.0e-4, log: true}'")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    params = []
    for key, spec in space.items():
        name = str(key).lstrip("-").replace("-", "_")
        bad = f"{where}: {key}:"
        if name not in actions or name in CONTROLLED or name == "config":
            why = "set by sweep.py for each trial" if name in CONTROLLED else "not a flag of train.py"
            raise _cli.UsageError(f"{bad} {why}; search train.py's flags (python scripts/train.py --help)")
        action = actions[name]
        param = Param(name=name, flag=action.option_strings[-1], switch=action.nargs == 0)
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, dict):
            raise _cli.UsageError(f"{bad} expected {{low: A, high: B}} or {{choices: [...]}}, got {spec!r}; fix a "
                                  f"value on the command line instead ({param.flag} VALUE)")
        spec = {{"min": "low", "max": "high", "values": "choices"}.get(k, k): v for k, v in spec.items()}
        unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
        if unknown:
            raise _cli.UsageError(f"{bad} unknown key {', '.join(map(str, unknown))}; use low, high, log, step or "
                                  "choices")
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise _cli.UsageError(f"{bad} give either choices or low/high, not both")
            params.append(_choices(param, action, spec["choices"], bad))
        else:
            params.append(_range(param, action, spec, bad))
    return params


def _choices(param: Param, action, choices, bad: str) -> Param:
    if not isinstance(choices, list) or not choices:
        raise _cli.UsageError(f"{bad} choices is empty; give a list of one value or more")
    if len({repr(c) for c in choices}) != len(choices):
        raise _cli.UsageError(f"{bad} choices repeat a value ({choices})")
    for value in choices:
        if param.switch:
            ok = isinstance(value, bool)
        else:
            ok = not isinstance(value, (bool, dict, list)) and _accepts(action, value)[0]
        if not ok:
            expected = "true or false" if param.switch else f"values that {param.flag} takes"
            raise _cli.UsageError(f"{bad} choice {value!r} is of the wrong type: {param.flag} takes {expected}")
    param.choices = list(choices)
    return param


def _range(param: Param, action, spec: dict, bad: str) -> Param:
    if param.switch:
        raise _cli.UsageError(f"{bad} {param.flag} is a switch; search it with choices: [true, false]")
    if "low" not in spec or "high" not in spec:
        raise _cli.UsageError(f"{bad} a range needs both low and high")
    low, high, step = _number(spec["low"]), _number(spec["high"]), spec.get("step")
    if low is None or high is None:
        raise _cli.UsageError(f"{bad} low and high must be finite numbers, got {spec['low']!r} and {spec['high']!r}")
    if low > high:
        raise _cli.UsageError(f"{bad} the range is empty: low {low!r} > high {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _cli.UsageError(f"{bad} log must be true or false, got {log!r}")
    if log and low <= 0:
        raise _cli.UsageError(f"{bad} a log range needs low > 0, got {low!r}")
    if step is not None:
        step = _number(step)
        if step is None or step <= 0 or log:
            raise _cli.UsageError(f"{bad} step must be a positive number, and cannot go with log")
    parsed = []
    for value in (low, high):
        ok, value_parsed = _accepts(action, value)
        if not ok or not isinstance(value_parsed, (int, float)):
            raise _cli.UsageError(f"{bad} {value!r} is of the wrong type or out of range for {param.flag} "
                                  f"(python scripts/train.py --help)")
        parsed.append(value_parsed)
    param.integer = all(isinstance(v, int) and not isinstance(v, bool) for v in parsed)
    if param.integer and step is not None and not float(step).is_integer():
        raise _cli.UsageError(f"{bad} {param.flag} takes integers, so step must be one, got {step!r}")
    param.low, param.high, param.log = parsed[0], parsed[1], log
    param.step = (int(step) if param.integer else float(step)) if step is not None else None
    return param


def load_space(path: str | None) -> tuple[dict, str]:
    """(the space mapping, its YAML text) from `path`, else the default space."""
    import yaml

    text = DEFAULT_SPACE
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise _cli.UsageError(f"--space {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        raise _cli.UsageError(f"--space {path}: not YAML ({str(exc).splitlines()[0]})") from None


# --- checks before anything is written -------------------------------------------------------------------------

def given_flags(parser, tokens: list[str]) -> set[str]:
    """The dests of the flags that `tokens` give (flags are spelt in full: the parser allows no abbreviation)."""
    found = set()
    for token in tokens:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                found.add(action.dest)
    return found


def check_train_flags(fixed: list[str], params: list[Param]):
    """train.py's namespace for the fixed flags; refuses flags the sweep sets, flags both fixed and searched, and
    values train.py would refuse at either end of every range."""
    from scripts import train

    parser = train_parser()
    given = given_flags(parser, fixed)
    controlled = sorted(given & set(CONTROLLED))
    if controlled:
        flags = ", ".join("--" + d.replace("_", "-") for d in controlled)
        raise _cli.UsageError(f"{flags}: set by sweep.py for each trial (trials go to <output-dir>/<name>/trial-N; "
                              "--resume continues a sweep); remove it")
    both = [p.flag for p in params if p.name in given]
    if both:
        raise _cli.UsageError(f"{', '.join(both)} is both fixed on the command line and searched in the space; "
                              "remove one")
    args = _cli.parse_args(parser, fixed, extras=train.HPARAM_EXTRAS)
    for end in (0, -1):  # every searched flag at one end of its range together: each combination parses
        probe = [t for p in params for t in p.tokens(p.choices[end] if p.choices is not None else (p.low, p.high)[end])]
        _cli.parse_args(parser, [*fixed, *probe], extras=train.HPARAM_EXTRAS)
    return args


def resolve_metric(args, fixed_args) -> tuple[str, str, str]:
    """(metric, direction, monitor): the data is read (and checked) here, as train.py reads it, to know the task's
    official metric."""
    from scripts import train

    source = _cli.load_data_source(fixed_args)
    official = _cli.official_metrics(source)
    fixed_args.monitor = fixed_args.monitor or official[0]
    train.check_monitor(fixed_args, official)
    metric = args.metric or fixed_args.monitor
    try:
        train.check_monitor(type(fixed_args)(monitor=metric), official)
    except _cli.UsageError as exc:
        raise _cli.UsageError(str(exc).replace("--monitor", "--metric", 1)) from None
    direction = args.direction or (fixed_args.monitor_mode if metric == fixed_args.monitor
                                   else "min" if "loss" in metric else "max")
    return metric, direction, fixed_args.monitor


# --- the sweep folder ----------------------------------------------------------------------------------------------

def read_settings(sweep_dir: str) -> dict:
    from scripts._rundir import read_yaml

    saved = read_yaml(os.path.join(sweep_dir, SWEEP_FILE))
    if saved is None:
        raise _cli.UsageError(f"{sweep_dir} is not a sweep folder ({SWEEP_FILE} is missing or unreadable); pass "
                              "another --name")
    return saved


def settle(args, fixed: list[str], space: dict | None, space_text: str | None, saved: dict | None):
    """The sweep's settings: what the command line gives, else what sweep.yaml recorded (on --resume), else the
    defaults. A --resume that gives other values than the sweep's own is refused, naming each."""
    settings = {k: getattr(args, k) for k in STUDY_SETTINGS}
    if saved is None:
        return {k: SETTING_DEFAULTS.get(k) if v is None else v for k, v in settings.items()}, fixed, space, space_text
    differ = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {v!r}" for k, v in settings.items()
              if v is not None and v != saved.get(k)]
    if fixed and fixed != saved.get("train_args"):
        differ.append(f"train.py flags {shlex.join(saved.get('train_args') or [])!r} -> {shlex.join(fixed)!r}")
    if space is not None and space != saved.get("space"):
        changed = sorted(set(map(str, space)) ^ set(map(str, saved.get("space") or {})))
        differ.append(f"--space: {', '.join(changed) or 'other ranges'}")
    if differ:
        raise _cli.UsageError(f"cannot resume the sweep with other settings than its own ({'; '.join(differ)}); "
                              "leave them out to use the sweep's, or start a new --name")
    import yaml

    return ({k: saved.get(k) for k in STUDY_SETTINGS}, list(saved.get("train_args") or []), saved.get("space"),
            space_text or yaml.safe_dump(saved.get("space"), sort_keys=False))


def _lock_file(path: str):
    """An exclusive flock on `path` (created), or None when another process holds it."""
    from scripts._rundir import _lock

    return _lock(path, os.O_RDWR | os.O_CREAT)


def requeue_killed(study, workers_dir: str) -> list[int]:
    """Trials left RUNNING by a sweep process that is gone (its worker lock is free): each is marked failed (user
    attribute `killed`) and queued again with the same parameters (`retry_of`). Returns their numbers."""
    from optuna.trial import TrialState

    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or worker.split(":", 1)[0] != socket.gethostname():
            continue  # no owner recorded yet, or a process on another machine: its lock cannot be seen from here
        path = os.path.join(workers_dir, f"{worker}.lock")
        fd = _lock_file(path)
        if fd is None:
            continue  # its process is alive
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "killed", True)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            requeued.append(trial.number)
        except Exception:  # another process got to it first (the trial is no longer running)
            continue
        finally:
            os.close(fd)
    for name in os.listdir(workers_dir):  # the lock files of processes that are gone
        fd = _lock_file(os.path.join(workers_dir, name))
        if fd is not None:
            os.remove(os.path.join(workers_dir, name))
            os.close(fd)
    return requeued


class _TrialRecord:
    """A trainer callback: the sweep's name and the trial number in the run's hparams.yaml and summary.yaml."""

    def __init__(self, name: str, number: int) -> None:
        self.name, self.number = name, number

    def on_fit_start(self, trainer, module):
        trainer.logger.log_hyperparams({"sweep": {"name": self.name, "trial": self.number}})
        trainer.logger.log_summary({"sweep/name": self.name, "sweep/trial": self.number})


def _reset_accelerate() -> None:
    """Each trial builds its own Accelerator (its precision and accumulation may be searched)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def best_of(values, direction: str) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return (max(finite) if direction == "max" else min(finite)) if finite else None


def train_command(fixed: list[str], params: list[Param], values: dict) -> str:
    """The train.py command line that runs a trial again."""
    tokens = [t for p in params if p.name in values for t in p.tokens(values[p.name])]
    return shlex.join(["python", "scripts/train.py", *fixed, *tokens])


def make_objective(study_name: str, sweep_dir: str, fixed: list[str], params: list[Param], metric: str,
                   direction: str, worker: str):
    from optuna import TrialPruned

    from scripts import train
    from trainer import Pruning

    loggers = (check_train_flags(fixed, []).logger or "").split(",")
    group = bool({"wandb", "mlflow"} & set(loggers)) and "--run-group" not in {t.split("=", 1)[0] for t in fixed}

    def objective(trial) -> float:
        trial.set_user_attr("worker", worker)
        run_name = f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", run_name)
        values = {p.name: p.suggest(trial) for p in params}
        tokens = [*fixed, *(t for p in params for t in p.tokens(values[p.name])),
                  "--output-dir", sweep_dir, "--run-name", run_name]
        if group:  # the trials of a sweep: one W&B group, one MLflow parent run
            tokens += ["--run-group", study_name]
        print(f"trial {trial.number}: {train_command(fixed, params, values)}", flush=True)
        pruning = Pruning(trial, metric)
        _reset_accelerate()
        try:
            code = train.main(tokens, callbacks=(pruning, _TrialRecord(study_name, trial.number)))
        except KeyboardInterrupt:
            code = _cli.EXIT_INTERRUPTED
        if code == _cli.EXIT_INTERRUPTED:  # Ctrl-C: the trial is failed, and queued again for the next --resume
            trial.set_user_attr("interrupted", True)
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise KeyboardInterrupt
        if code != 0:
            raise TrialFailed(f"trial {trial.number}: train.py ended with exit code {code} (see {run_name})")
        trial.set_user_attr("epochs", len(pruning.values))
        if pruning.pruned_epoch is not None:
            trial.set_user_attr("pruned_epoch", pruning.pruned_epoch)
            raise TrialPruned(f"{metric} {pruning.values[pruning.pruned_epoch]:.4f} at epoch {pruning.pruned_epoch}")
        value = best_of(pruning.values.values(), direction)
        if value is None:
            raise TrialFailed(f"trial {trial.number}: no finite {metric} in {run_name}")
        return value

    return objective


def main(argv: list[str] | None = None) -> int:
    import yaml

    from scripts import _rundir

    args, fixed = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    fixed = [t for t in fixed if t != "--"]
    if args.resume and not args.name:
        raise _cli.UsageError("--resume needs the --name of the sweep to continue")
    name = _rundir.check_run_name(args.name or "sweep-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    sweep_dir = os.path.join(args.output_dir, name)
    exists = os.path.isdir(sweep_dir) and bool(os.listdir(sweep_dir))
    if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
        raise _cli.UsageError(f"{sweep_dir} exists and is not a folder; choose another --name or --output-dir")
    if exists and not args.resume:
        raise _cli.UsageError(f"sweep folder {sweep_dir} already exists; pass --resume to continue it, or choose "
                              "another --name")
    saved = read_settings(sweep_dir) if exists else None
    space, space_text = load_space(args.space) if args.space else (None, None)
    if saved is None and space is None:
        space, space_text = load_space(None)
    settings, fixed, space, space_text = settle(args, fixed, space, space_text, saved)
    params = parse_space(space, train_parser(), f"--space {args.space}" if args.space else "the search space")
    fixed_args = check_train_flags(fixed, params)
    metric, direction, monitor = resolve_metric(args, fixed_args)
    if settings["metric"] is None:
        settings.update(metric=metric, direction=direction)
    elif saved is None:
        settings.update(direction=direction)

    # Everything is checked: from here on the sweep writes.
    if not exists:
        _rundir._make_dirs(sweep_dir, "the sweep folder")
        with open(os.path.join(sweep_dir, SPACE_FILE), "w", encoding="utf-8") as f:
            f.write(space_text)
        with open(os.path.join(sweep_dir, SWEEP_FILE), "w", encoding="utf-8") as f:
            yaml.safe_dump({"name": name, **settings, "train_args": fixed, "space": space,
                            "created": datetime.datetime.now().isoformat(timespec="seconds")}, f, sort_keys=False)
    workers_dir = os.path.join(sweep_dir, "workers")
    os.makedirs(workers_dir, exist_ok=True)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    worker_lock = _lock_file(os.path.join(workers_dir, f"{worker}.lock"))
    try:
        return run_sweep(args, name, sweep_dir, settings, fixed, params, monitor, worker)
    finally:
        if worker_lock is not None:
            os.close(worker_lock)
            os.remove(os.path.join(workers_dir, f"{worker}.lock"))


def run_sweep(args, name, sweep_dir, settings, fixed, params, monitor, worker) -> int:
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from scripts import _sweep_report

    metric, direction = settings["metric"], settings["direction"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(os.path.join(sweep_dir, STUDY_FILE))}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    # The sampler's seed moves on with the study, so a resumed process does not draw the first process's points again.
    existing = name in optuna.get_all_study_names(storage)
    seed = settings["sampler_seed"] + (len(optuna.load_study(study_name=name, storage=storage).trials) if existing
                                       else 0)
    sampler = optuna.samplers.TPESampler(seed=seed) if settings["sampler"] == "tpe" else \
        optuna.samplers.RandomSampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=settings["pruner_startup_trials"],
                                         n_warmup_steps=settings["pruner_warmup_epochs"]) \
        if settings["pruner"] == "median" else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize" if direction == "max" else "minimize", load_if_exists=True)
    requeued = requeue_killed(study, os.path.join(sweep_dir, "workers"))
    if requeued:
        print(f"queued again: trial {', '.join(map(str, requeued))} (running when its sweep process ended)", flush=True)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = args.n_trials - len(study.get_trials(deepcopy=False, states=finished))
    print(f"sweep folder: {os.path.abspath(sweep_dir)}; {metric} ({direction}); "
          f"{max(remaining, 0)} of {args.n_trials} trials to run", flush=True)
    code = 0
    if remaining > 0:
        objective = make_objective(name, sweep_dir, fixed, params, metric, direction, worker)
        try:
            study.optimize(objective, n_trials=remaining, timeout=args.timeout, catch=(TrialFailed,),
                           callbacks=[MaxTrialsCallback(args.n_trials, states=finished)], gc_after_trial=True)
        except KeyboardInterrupt:
            code = _cli.EXIT_INTERRUPTED
            command = shlex.join(["python", "scripts/sweep.py", "--name", name, "--output-dir", args.output_dir,
                                  "--n-trials", str(args.n_trials), "--resume"])
            print(f"interrupted (Ctrl-C); the interrupted trial is queued again. Continue with: {command}",
                  file=sys.stderr)
    report = _sweep_report.build(study, sweep_dir, metric, direction,
                                 lambda values: train_command(fixed, params, values),
                                 os.path.join(sweep_dir, REPORT_FILE))
    print(f"report: {os.path.abspath(report)}")
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None:
        print(json.dumps({"best": {"trial": best.number, metric: round(best.value, 4), "params": best.params,
                                   "run_dir": os.path.abspath(os.path.join(sweep_dir, best.user_attrs["run_dir"]))},
                          "command": train_command(fixed, params, best.params)}), flush=True)
    return code


if __name__ == "__main__":
    _cli.exit(_cli.run_main(main))
