"""A sweep's report, built from the Optuna study alone (so on any machine that reaches its storage): one
self-contained HTML file (tracking/page.py). The trials table sorted by the metric (best first; the worker and
machine that ran each trial, a failed trial's reason), the best trial's train.py command, the optimisation history,
each trial's metric per epoch (where the pruner stopped it), and the parameters' importance (Optuna's fANOVA)."""
from __future__ import annotations

import html
import math
import warnings

import pandas as pd

from tracking.page import figure_html, table_html, write_page
from trainer.callbacks import improves


def _note(trial, retried_as: dict[int, int]) -> str:
    """Why a trial ended as it did, in words: a failure's reason, a worker that died or was stopped (and the trial
    that ran its parameters again), where the pruner stopped it, which trial it runs again."""
    attrs, state, notes = trial.user_attrs, trial.state.name, []
    if "retry_of" in attrs:
        notes.append(f"runs trial {attrs['retry_of']} again")
    if state == "FAIL":
        again = f"; run again as trial {retried_as[trial.number]}" if trial.number in retried_as else \
            "; queued again" if attrs.get("interrupted") else ""
        if "failed_reason" in attrs:
            notes.append(f"failed: {attrs['failed_reason']}")
        elif attrs.get("interrupted"):
            notes.append(f"stopped with its worker (Ctrl-C or SIGTERM){again}")
        elif attrs.get("surplus"):
            notes.append("not run: other workers had started the last trials")
        else:
            notes.append(f"its worker died (no heartbeat){again}")
    elif state == "PRUNED" and "pruned_epoch" in attrs:
        notes.append(f"pruned after epoch {attrs['pruned_epoch']}")
    elif state == "RUNNING":
        notes.append(f"running on {attrs.get('worker', '?')}")
    return "; ".join(notes)


def trials_table(study, metric: str, direction: str) -> pd.DataFrame:
    """One row per trial: the complete ones, best first, then the pruned ones by their last value, then the others;
    each with its parameters, duration, the worker and machine that ran it, its run folder there, and a note."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return pd.DataFrame(columns=["trial", "state", metric])
    retried_as = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    params = list(dict.fromkeys(name for t in trials for name in t.params))
    rows = [{"trial": t.number, "state": t.state.name, metric: t.value, **{p: t.params.get(p) for p in params},
             "duration (s)": round(t.duration.total_seconds(), 1) if t.duration is not None else None,
             "host": t.user_attrs.get("host"), "worker": t.user_attrs.get("worker"),
             "run folder": t.user_attrs.get("run_dir"), "note": _note(t, retried_as)} for t in trials]
    frame = pd.DataFrame(rows)
    # Complete trials first, best first; then pruned ones (Optuna gives them their last reported value), then the rest.
    frame["_rank"] = frame["state"].map({"COMPLETE": 0, "PRUNED": 1}).fillna(2)
    frame = frame.sort_values(["_rank", metric, "trial"], ascending=[True, direction == "min", True],
                              na_position="last")
    return frame.drop(columns="_rank").reset_index(drop=True)


def _history(study, metric: str, direction: str):
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in complete], [t.value for t in complete], color="C0", label="complete", zorder=3)
    ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
               color="C3", marker="x", label="pruned (last value)", zorder=3)
    best, xs, ys = None, [], []
    for trial in sorted(complete, key=lambda t: t.number):
        if improves(trial.value, best, direction):
            best = trial.value
        xs.append(trial.number)
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    ax.set(title="Optimisation history", xlabel="trial", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _intermediate(study, metric: str):
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for trial in study.trials:
        if trial.intermediate_values:
            epochs = sorted(trial.intermediate_values)
            pruned = trial.state == TrialState.PRUNED
            label = f"{trial.number} (pruned)" if pruned else str(trial.number)
            ax.plot(epochs, [trial.intermediate_values[e] for e in epochs], marker="x" if pruned else "o",
                    linestyle="--" if pruned else "-", alpha=0.8, label=label)
    ax.set(title=f"{metric} after each epoch", xlabel="epoch", ylabel=metric)
    ax.grid(alpha=0.3)
    if len(study.trials) <= 20:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def importances(study) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA over the complete trials); None when they cannot be computed yet."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):  # fewer than two complete trials, a single value, ...
        return None


def _importance_figure(values: dict[str, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 0.6 + 0.4 * len(values)))
    ax = fig.subplots()
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="C0")
    ax.set(title="Parameter importance (fANOVA)", xlabel="importance")
    fig.tight_layout()
    return fig


def build(study, sweep_dir: str, metric: str, direction: str, command_for, output: str) -> str:
    """Write the report of `study` to `output`; `command_for(params)` is the train.py command of a trial."""
    from optuna.trial import TrialState

    counts = {state: sum(t.state == state for t in study.trials) for state in TrialState}
    summary = ", ".join(f"{n} {state.name.lower()}" for state, n in counts.items() if n)
    title = f"Sweep {study.study_name}"
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="path">{html.escape(sweep_dir)}</p>']
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and t.value is not None
                and not math.isnan(t.value)]
    if complete:
        best = study.best_trial
        body.append(f'<p class="headline" id="headline">Best {html.escape(metric)} = {best.value:.4f} ({direction}) '
                    f'in trial {best.number}, of {len(study.trials)} trials ({summary}).</p>')
        body.append("<h2>Best trial's command</h2><p>Runs the best trial again (a new run folder):</p>"
                    f'<pre id="best-command">{html.escape(command_for(best.params))}</pre>'
                    f"<p>or <code>python scripts/train.py --config "
                    f"{html.escape(sweep_dir)}/{html.escape(best.user_attrs.get('run_dir', ''))}/hparams.yaml</code>"
                    "</p>")
    else:
        body.append(f'<p class="headline" id="headline">No complete trial yet ({summary or "no trials"}).</p>')
    body.append(f"<h2>Trials, best {html.escape(metric)} first</h2><p>Click a column to sort.</p>")
    body.append(table_html(trials_table(study, metric, direction), "trials", filterable=True))
    body.append("<h2>Optimisation history</h2><div class='grid'>")
    if study.trials:
        body.append(figure_html(_history(study, metric, direction)))
        body.append(figure_html(_intermediate(study, metric)))
    body.append("</div><h2>Parameter importance</h2>")
    values = importances(study) if len(complete) >= 2 else None
    if values:
        body.append(figure_html(_importance_figure(values)))
        body.append(table_html(pd.DataFrame({"parameter": list(values), "importance": list(values.values())}),
                               "importance"))
    else:
        body.append('<p class="missing" id="importance-missing">Needs two or more complete trials whose parameters '
                    'differ.</p>')
    return write_page(title, body, output)
