"""The sweep engine behind scripts/sweep.py: Optuna studies whose trials are train.py runs, shared by any number of
workers on any number of machines through the study's storage.

- The study is the one shared record: its storage is `--storage URL` (any Optuna RDB URL: PostgreSQL, MySQL,
  SQLite), by default `<output-dir>/<name>/study.db`. The sweep's settings (train.py's fixed flags, metric,
  direction, sampler, pruner, search space, trial budget) live in the study's user attributes, so a worker joins with
  `--storage URL --name NAME` alone; one that passes other settings is refused, naming each difference.
- Each trial is a full train.py run (`recipes.train.fit`, in this process) in the worker's own
  `<output-dir>/<name>/trial-NNNN`; the trial records which worker and machine ran it and where its folder is.
- A worker that dies (kill -9, a lost machine) stops beating its heartbeat: after `--grace-period` seconds any live
  worker marks its trial failed and runs it again with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback). A
  worker stopped by Ctrl-C or SIGTERM queues its trial again itself and exits. A trial that fails on its own (a
  non-finite loss, a refused flag value, a crash) is recorded as failed with its one-line reason, and the sweep goes
  on. Only the sweep's own misuse stops it.
- `--n-trials` counts the trials that ended on their own (complete, pruned or failed) over the whole study; trials
  killed with their worker and run again are not counted twice.
"""
from __future__ import annotations

import datetime
import json
import os
import random
import shlex
import socket
import sys
import time
import warnings

import yaml

from recipes import cli
from recipes.space import Param, check_train_flags, load_space, parse_space, train_parser
from recipes.train import fit, load_source
from tracking.files import first_line, write_text
from trainer.callbacks import best_index

SWEEP_FILE, SPACE_FILE, STUDY_FILE, REPORT_FILE = "sweep.yaml", "space.yaml", "study.db", "report.html"
SETTINGS = "sweep"  # the study's user attribute that holds its settings
# Recorded with the study; a worker that gives one of them must give the same.
STUDY_SETTINGS = ("metric", "direction", "sampler", "sampler_seed", "pruner", "pruner_startup_trials",
                  "pruner_warmup_epochs")
SETTING_DEFAULTS = {"sampler": "tpe", "sampler_seed": 0, "pruner": "median", "pruner_startup_trials": 5,
                    "pruner_warmup_epochs": 0, "n_trials": 20}


def build_parser() -> cli.Parser:
    p = cli.Parser(prog="sweep.py", allow_abbrev=False, description=(
        "Search train.py's hyperparameters with Optuna. Every trial is a train.py run in <output-dir>/<name>; flags "
        "not listed here are train.py's and are fixed for every trial (python scripts/train.py --help). Workers on "
        "several machines share one sweep through --storage."))
    p.add_argument("--name", default=None, help="the sweep's name: the Optuna study, the folder under --output-dir, "
                   "the W&B group (default: sweep-<timestamp>)")
    p.add_argument("--output-dir", default="sweeps", help="where this worker writes its trials' run folders, in "
                   "<output-dir>/<name> (default: %(default)s)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="the study's Optuna storage, shared by every worker: postgresql://user@host:port/db, "
                        "mysql://..., sqlite:///path (default: sqlite:///<output-dir>/<name>/study.db)")
    p.add_argument("--space", default=None, metavar="YAML",
                   help="search space file (default: learning rates, warm-up, weight decay, batch size, epochs, "
                        "dropout; written to the sweep folder's space.yaml)")
    p.add_argument("--n-trials", type=cli.non_negative_int, default=None,
                   help="trials the study should have run (complete, pruned or failed), over all workers; recorded "
                        "with the study; --resume may raise it (default: the study's, else 20)")
    p.add_argument("--timeout", type=cli.positive_float, default=None,
                   help="this worker stops starting trials after this many seconds (default: no limit)")
    p.add_argument("--metric", default=None,
                   help="the metric to optimise, its best value over a trial's validations (default: the runs' "
                        "--monitor, valid/mcc for CoLA)")
    p.add_argument("--direction", choices=["max", "min"], default=None,
                   help="default: --monitor-mode for the monitored metric, else min for a loss and max otherwise")
    p.add_argument("--sampler", choices=["tpe", "random"], default=None, help="(default: tpe)")
    p.add_argument("--sampler-seed", type=cli.seed, default=None,
                   help="seed of the sampler; each worker adds the number of its first trial (default: 0)")
    p.add_argument("--pruner", choices=["median", "none"], default=None,
                   help="stop trials whose metric is worse than the median of earlier trials at the same epoch "
                        "(default: median)")
    p.add_argument("--pruner-startup-trials", type=cli.non_negative_int, default=None,
                   help="finished trials before any is pruned (default: 5, Optuna's)")
    p.add_argument("--pruner-warmup-epochs", type=cli.non_negative_int, default=None,
                   help="validations of a trial before it may be pruned (default: 0, Optuna's)")
    p.add_argument("--heartbeat-interval", type=cli.positive_int, default=30,
                   help="seconds between a worker's heartbeats for its running trial (default: %(default)s)")
    p.add_argument("--grace-period", type=cli.positive_int, default=None,
                   help="seconds without a heartbeat after which a trial's worker counts as dead and the trial is run "
                        "again (default: 4 heartbeats)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep --name, which must exist (a worker also joins one without it when its "
                        "settings agree); only --resume may raise --n-trials")
    p.add_argument("--report-only", action="store_true",
                   help="write the sweep's report.html from the study alone, and run no trial")
    return p


def main(argv: list[str] | None = None) -> int:
    """scripts/sweep.py: the sweep's own flags, the rest fixed train.py flags for every trial."""
    args, fixed = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    return run(args, fixed)


def _storage_url(args, sweep_dir: str) -> str:
    return args.storage or f"sqlite:///{os.path.abspath(os.path.join(sweep_dir, STUDY_FILE))}"


def open_storage(url: str, args):
    """Optuna's RDB storage with heartbeats: a trial whose worker stops beating for the grace period is failed and
    run again with the same parameters by the next worker that starts a trial."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and their retry callback have been "experimental" since Optuna 2.8; say nothing of it on every call
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(6):
        try:
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=args.heartbeat_interval,
                              grace_period=args.grace_period or 4 * args.heartbeat_interval,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=None))
        except Exception as exc:  # a bad URL, a server that is down, a missing database driver
            # Workers started at once on an empty database race to create Optuna's tables: the loser tries again
            if attempt < 5 and type(exc).__name__ == "IntegrityError":
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            raise cli.UsageError(f"--storage {url}: cannot open it ({first_line(exc, with_type=True)})") from None


def saved_settings(storage, name: str) -> dict | None:
    """The settings recorded with the study `name`, None when there is no such study."""
    import optuna

    if name not in optuna.get_all_study_names(storage):
        return None
    saved = optuna.load_study(study_name=name, storage=storage).user_attrs.get(SETTINGS)
    if not isinstance(saved, dict):
        raise cli.UsageError(f"study {name!r} in the storage was not made by sweep.py (it has no sweep settings); "
                             "choose another --name")
    return saved


def settle(args, fixed: list[str], space: dict | None, saved: dict | None) -> dict:
    """The sweep's settings: what the command line gives, else what the study recorded, else the defaults. Other
    values than the study's are refused in one line naming each; only --resume may raise --n-trials."""
    given = {k: getattr(args, k) for k in (*STUDY_SETTINGS, "n_trials")}
    if saved is None:
        settings = {k: SETTING_DEFAULTS.get(k) if v is None else v for k, v in given.items()}
        return {**settings, "train_args": fixed, "space": space}
    differ = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {v!r}" for k, v in given.items()
              if v is not None and v != saved.get(k) and not (k == "n_trials" and args.resume)]
    if fixed and fixed != saved.get("train_args"):
        differ.append(f"train.py flags {shlex.join(saved.get('train_args') or [])!r} -> {shlex.join(fixed)!r}")
    if space is not None and space != saved.get("space"):
        changed = sorted(set(map(str, space)) ^ set(map(str, saved.get("space") or {})))
        differ.append(f"--space: {', '.join(changed) or 'other ranges'}")
    if differ:
        raise cli.UsageError(f"sweep {args.name!r} has other settings ({'; '.join(differ)}); leave them out to use "
                             "the sweep's, or start a new --name")
    return {**saved, **({"n_trials": args.n_trials} if args.n_trials is not None else {})}


def resolve_metric(args, fixed_args) -> tuple[str, str]:
    """(metric, direction): the data is read (and checked) here, as train.py reads it, to know the task's official
    metric."""
    from models.tasks import check_monitor

    source = load_source(fixed_args)
    metric = args.metric or fixed_args.monitor
    check_monitor(metric, source, flag="--metric")
    direction = args.direction or (fixed_args.monitor_mode if metric == fixed_args.monitor
                                   else "min" if "loss" in metric else "max")
    return metric, direction


def train_command(fixed: list[str], params: list[Param], values: dict) -> str:
    """The train.py command line that runs a trial again."""
    tokens = [t for p in params if p.name in values for t in p.tokens(values[p.name])]
    return shlex.join(["python", "scripts/train.py", *fixed, *tokens])


def run(args, fixed: list[str]) -> int:
    """Check everything, then create or join the sweep and work on it; returns the exit code."""
    from trainer.run_folder import check_run_name, make_dirs

    fixed = [t for t in fixed if t != "--"]
    if (args.resume or args.report_only) and not args.name:
        raise cli.UsageError(f"--{'resume' if args.resume else 'report-only'} needs the --name of the sweep")
    name = check_run_name(args.name or "sweep-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), flag="--name")
    args.name = name
    sweep_dir = os.path.join(args.output_dir, name)
    if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
        raise cli.UsageError(f"{sweep_dir} exists and is not a folder; choose another --name or --output-dir")
    url = _storage_url(args, sweep_dir)
    local = args.storage is None
    exists = not local or os.path.isfile(os.path.join(sweep_dir, STUDY_FILE))
    storage = open_storage(url, args) if exists else None
    saved = saved_settings(storage, name) if exists else None
    if saved is None and (args.resume or args.report_only):
        raise cli.UsageError(f"no sweep {name!r} in {url}; check --name and --storage (and --output-dir)")
    if args.report_only:
        return report(storage, name, saved, sweep_dir)
    space, space_text = load_space(args.space) if args.space else (None, None)
    if saved is None and space is None:
        space, space_text = load_space(None)
    settings = settle(args, fixed, space, saved)
    params = parse_space(settings["space"], train_parser(),
                         f"--space {args.space}" if args.space else "the search space")
    fixed_args = check_train_flags(settings["train_args"], params)
    metric, direction = resolve_metric(args, fixed_args)
    if settings["metric"] is None or saved is None:
        settings.update(metric=settings["metric"] or metric, direction=settings["direction"] or direction)

    # Everything is checked: from here on the sweep writes.
    make_dirs(sweep_dir, "the sweep folder")
    if storage is None:
        storage = open_storage(url, args)
    study = _create_or_join(storage, name, settings)
    for file, text in ((SPACE_FILE, space_text or yaml.safe_dump(settings["space"], sort_keys=False)),
                       (SWEEP_FILE, yaml.safe_dump({"name": name, "storage": url if not local else STUDY_FILE,
                                                    **{k: v for k, v in settings.items() if k != "space"}},
                                                   sort_keys=False))):
        if not os.path.exists(os.path.join(sweep_dir, file)):
            write_text(os.path.join(sweep_dir, file), text)
    worker = Worker(study, args, sweep_dir, settings, params)
    code = worker.work()
    report(storage, name, settings, sweep_dir, params)
    return code


def _create_or_join(storage, name: str, settings: dict):
    """The study: created with `settings` as its user attribute, or joined when it exists with the same settings
    (two workers that start at once both create it: the second joins)."""
    import optuna

    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="maximize" if settings["direction"] == "max" else "minimize")
    if study.user_attrs.get(SETTINGS) is None:
        study.set_user_attr(SETTINGS, {**settings, "created": datetime.datetime.now().isoformat(timespec="seconds")})
    elif study.user_attrs[SETTINGS].get("n_trials") != settings["n_trials"]:  # --resume raised the budget
        study.set_user_attr(SETTINGS, {**study.user_attrs[SETTINGS], "n_trials": settings["n_trials"]})
    return study


class _TrialRecord:
    """A trainer callback: the sweep's name and the trial number in the run's hparams.yaml and summary.yaml, and the
    exception that ended a trial, for its one-line reason."""

    def __init__(self, name: str, number: int) -> None:
        self.name, self.number, self.exception = name, number, None

    def on_fit_start(self, trainer, module):
        trainer.logger.log_hyperparams({"sweep": {"name": self.name, "trial": self.number}})
        trainer.logger.log_summary({"sweep/name": self.name, "sweep/trial": self.number})

    def on_exception(self, trainer, module, exception):
        self.exception = exception


class _SeededAtFirstTrial:
    """The worker's sampler, seeded with the sweep's seed plus the number of the worker's first trial. The storage
    hands out trial numbers one at a time, so workers that start together (and see the same number of trials) never
    draw the same points; a lone worker, new or resumed, draws what it always did (its first trial's number is the
    number of trials already in the study)."""

    def __init__(self, make) -> None:
        self.make, self.sampler = make, None

    def before_trial(self, study, trial) -> None:
        if self.sampler is None:
            self.sampler = self.make(trial.number)
        self.sampler.before_trial(study, trial)

    def __getattr__(self, name):  # infer_relative_search_space, sample_relative, sample_independent, after_trial
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler if self.sampler is not None else self.make(0), name)


class _Stop(Exception):
    """The worker stops: Ctrl-C or SIGTERM ended its trial (queued again), or its budget is spent."""


class Worker:
    """One sweep.py process: runs trials one at a time until the study has its `n_trials` ended trials, the
    timeout passes, or it is stopped."""

    def __init__(self, study, args, sweep_dir: str, settings: dict, params: list[Param]) -> None:
        self.study, self.args, self.sweep_dir, self.settings, self.params = study, args, sweep_dir, settings, params
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.stop: str | None = None  # the signal that asked this worker to stop
        loggers = (check_train_flags(settings["train_args"], []).logger or "").split(",")
        self.group = bool({"wandb", "mlflow"} & set(loggers)) and \
            "--run-group" not in {t.split("=", 1)[0] for t in settings["train_args"]}

    def _sampler_and_pruner(self):
        import optuna

        s = self.settings
        kind = optuna.samplers.TPESampler if s["sampler"] == "tpe" else optuna.samplers.RandomSampler
        sampler = _SeededAtFirstTrial(lambda number: kind(seed=s["sampler_seed"] + number))
        pruner = optuna.pruners.MedianPruner(n_startup_trials=s["pruner_startup_trials"],
                                             n_warmup_steps=s["pruner_warmup_epochs"]) \
            if s["pruner"] == "median" else optuna.pruners.NopPruner()
        return sampler, pruner

    def counts(self) -> tuple[int, int, int]:
        """(trials that ended on their own, trials running, trials queued), over the whole study. A trial failed
        because its worker died or stopped (and queued again) has not ended on its own."""
        ended = running = waiting = 0
        for trial in self.study.get_trials(deepcopy=False):
            state = trial.state.name
            if state == "RUNNING":
                running += 1
            elif state == "WAITING":
                waiting += 1
            elif _ended_on_its_own(trial):
                ended += 1
        return ended, running, waiting

    def work(self) -> int:

        sampler, pruner = self._sampler_and_pruner()
        self.study.sampler, self.study.pruner = sampler, pruner
        n_trials, start = self.settings["n_trials"], time.monotonic()
        ended, running, _ = self.counts()
        print(f"sweep {self.study.study_name}: {self.settings['metric']} ({self.settings['direction']}); {ended} of "
              f"{n_trials} trials done, {running} running; worker {self.name}, trials in "
              f"{os.path.abspath(self.sweep_dir)}", flush=True)
        with cli.on_sigterm(self._sigterm):
            while self.stop is None:
                if self.args.timeout is not None and time.monotonic() - start > self.args.timeout:
                    break
                self._fail_stale()
                ended, running, waiting = self.counts()
                if ended >= n_trials:
                    break
                if ended + running >= n_trials and not waiting:
                    time.sleep(min(5, self.args.heartbeat_interval))  # the last trials run elsewhere: stay in case
                    continue                                          # their worker dies
                try:
                    self.study.optimize(self._objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
                except (KeyboardInterrupt, _Stop):
                    break
        if self.stop is not None:
            command = shlex.join(["python", "scripts/sweep.py", "--name", self.study.study_name, "--output-dir",
                                  self.args.output_dir, *(["--storage", self.args.storage] if self.args.storage
                                                          else []), "--resume"])
            print(f"interrupted ({self.stop}); the interrupted trial is queued again. Continue with: {command}",
                  file=sys.stderr)
            return cli.EXIT_INTERRUPTED if self.stop == "Ctrl-C" else cli.exit_code(self.stop)
        return 0

    def _fail_stale(self) -> None:
        """The trials of workers that stopped beating (killed, a lost machine): failed, and queued again with the
        same parameters (RetryHeartbeatStaleTrialCallback); say which."""
        import optuna

        running = {t.number for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(self.study)
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number in running and trial.state.name == "FAIL":
                print(f"queued again: trial {trial.number} (its worker {trial.user_attrs.get('worker', '?')} "
                      f"stopped; no heartbeat for {self.args.grace_period or 4 * self.args.heartbeat_interval} s)",
                      flush=True)

    def _sigterm(self, signal_name: str) -> None:
        self.stop = signal_name  # between trials; a trial under way gets its own handler (recipes.train.fit)

    def _surplus(self, trial) -> bool:
        """Whether `trial` was started when the budget was already spoken for by earlier trials (two workers that
        check the count at once): trials are ranked by their number, which the storage hands out in order."""
        earlier = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number
                   and (t.state.name == "RUNNING" or _ended_on_its_own(t))]
        return len(earlier) >= self.settings["n_trials"]

    def _objective(self, trial) -> float:
        from optuna import TrialPruned

        from trainer import Pruning

        if self._surplus(trial):
            trial.set_user_attr("surplus", True)
            raise _Stop("the budget was spent by other workers")
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        run_name = f"trial-{trial.number:04d}"
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        if retry_of is not None:  # a dead worker's trial, run again with its parameters
            trial.set_user_attr("retry_of", retry_of)
        trial.set_user_attr("worker", self.name)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("run_dir", os.path.abspath(os.path.join(self.sweep_dir, run_name)))
        values = {p.name: p.suggest(trial) for p in self.params}
        tokens = [*self.settings["train_args"], *(t for p in self.params for t in p.tokens(values[p.name])),
                  "--output-dir", self.sweep_dir, "--run-name", run_name]
        if self.group:  # the trials of a sweep: one W&B group, one MLflow parent run, whichever machine ran them
            tokens += ["--run-group", self.study.study_name]
        print(f"trial {trial.number}: {train_command(self.settings['train_args'], self.params, values)}", flush=True)
        metric = self.settings["metric"]
        pruning, record = Pruning(trial, metric), _TrialRecord(self.study.study_name, trial.number)
        try:
            code = fit(cli.parse_args(train_parser(), tokens), tokens, callbacks=(pruning, record))
        except cli.user_errors() as exc:  # a sampled value the data or the model refuses
            return _failed(trial, str(exc))
        except KeyboardInterrupt:
            code = cli.EXIT_INTERRUPTED
        except Exception as exc:  # a crash: the trial fails with its reason, the sweep goes on
            return _failed(trial, first_line(exc, with_type=True))
        stops = {cli.EXIT_INTERRUPTED: "Ctrl-C", **{cli.exit_code(name): name for name in cli.STOP_SIGNALS}}
        if code in stops:  # stopped from outside: run it again (any worker), then stop
            trial.set_user_attr("interrupted", True)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            self.stop = self.stop or stops[code]
            raise _Stop(self.stop)
        if code != 0:
            reason = first_line(record.exception) if record.exception is not None else f"exit code {code}"
            return _failed(trial, reason)
        trial.set_user_attr("epochs", len(pruning.values))
        if pruning.pruned_epoch is not None:
            trial.set_user_attr("pruned_epoch", pruning.pruned_epoch)
            raise TrialPruned(f"{metric} {pruning.values[pruning.pruned_epoch]:.4f} at epoch {pruning.pruned_epoch}")
        values = list(pruning.values.values())
        best = best_index(values, self.settings["direction"])
        if best is None:
            return _failed(trial, f"no finite {metric} in any validation")
        return values[best]


class _TrialFailed(Exception):
    """A trial that ended in failure on its own; recorded with its reason, and the sweep goes on."""


def _failed(trial, reason: str):
    trial.set_user_attr("failed_reason", reason)
    print(f"trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)
    raise _TrialFailed(reason)


def _ended_on_its_own(trial) -> bool:
    """Complete, pruned, or failed for a reason of its own (`failed_reason`); not a trial whose worker died or was
    stopped (it is run again under another number), nor one started past the budget."""
    return trial.state.name in ("COMPLETE", "PRUNED") or \
        (trial.state.name == "FAIL" and "failed_reason" in trial.user_attrs)


def report(storage, name: str, settings: dict, sweep_dir: str, params: list[Param] | None = None) -> int:
    """Write the sweep's report.html (from the study alone) and print the best trial as the last JSON line."""
    import optuna

    from recipes.sweep_report import build
    from trainer.run_folder import make_dirs

    study = optuna.load_study(study_name=name, storage=storage)
    if params is None:
        params = parse_space(settings["space"], train_parser(), "the study's search space")
    make_dirs(sweep_dir, "the sweep folder")
    path = build(study, sweep_dir, settings["metric"], settings["direction"],
                 lambda values: train_command(settings["train_args"], params, values),
                 os.path.join(sweep_dir, REPORT_FILE))
    print(f"report: {os.path.abspath(path)}")
    try:
        best = study.best_trial
    except ValueError:
        return 0
    print(json.dumps({"best": {"trial": best.number, settings["metric"]: round(best.value, 4), "params": best.params,
                               "run_dir": best.user_attrs.get("run_dir"), "host": best.user_attrs.get("host")},
                      "command": train_command(settings["train_args"], params, best.params)}), flush=True)
    return 0


