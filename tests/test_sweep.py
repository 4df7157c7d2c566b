"""scripts/sweep.py: Optuna sweeps whose trials are train.py runs; finishing, pruning, kill and resume, the report,
and the refusals. Each trial is a tiny random BERT on 48 sentences for 1-2 epochs."""
import os
import shlex
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from conftest import ROOT, assert_one_line_error, headless_chromium, needs_chromium, run_script

optuna = pytest.importorskip("optuna")


def fixed_flags(model_dir, tiny_cola, epochs=2):
    return ["--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", str(epochs),
            "--log-every-n-steps", "50", "--no-progress-bar"]


def sweep_inprocess(argv, capsys):
    """sweep.py's main as the script runs it: (exit code, stdout, stderr); argparse's exit is an exit code too."""
    from recipes import cli, sweep

    try:
        code = cli.run_main(sweep.main, argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def load_study(sweep_dir):
    return optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'study.db'}")


def finished(study):
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.trials if t.state in states]


# The learning rate decides whether valid/loss falls (0.01) or stays where the random head put it (1e-7): with the
# random sampler's seed 3 the first trial learns and a later one does not, and the median pruner (one start-up trial)
# stops it after its first epoch.
SPACE = "lr: {choices: [0.01, 1.0e-7]}\nwarmup_ratio: {low: 0.0, high: 0.2}\nbatch_size: [8, 16]\n"


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, tiny_cola, model_dir):
    work = tmp_path_factory.mktemp("sweep")
    (work / "space.yaml").write_text(SPACE)
    argv = ["--name", "s", "--output-dir", str(work / "sweeps"), "--space", str(work / "space.yaml"), "--n-trials",
            "4", "--metric", "valid/loss", "--sampler", "random", "--sampler-seed", "3", "--pruner-startup-trials", "1",
            *fixed_flags(model_dir, tiny_cola)]
    from accelerate.state import AcceleratorState, GradientState

    from recipes import cli, sweep

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("WANDB_MODE", "offline")
        code = cli.run_main(sweep.main, argv)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return SimpleNamespace(code=code, dir=work / "sweeps" / "s", argv=argv,
                           fixed=fixed_flags(model_dir, tiny_cola))


def html_table(document: str, table_id: str) -> pd.DataFrame:
    """The table `table_id` of an HTML page, its cells as text (pandas.read_html would need lxml)."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.inside, self.rows, self.cell = False, [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table" and dict(attrs).get("id") == table_id:
                self.inside = True
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag == "table":
                self.inside = False
            elif self.inside and tag in ("td", "th"):
                self.rows[-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    cells = Cells()
    cells.feed(document)
    header, *rows = cells.rows
    return pd.DataFrame(rows, columns=header)


def best_loss(run_dir):
    frame = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["valid/loss_epoch"])
    return frame["valid/loss_epoch"].tolist()


def test_a_four_trial_sweep_finishes_with_a_run_folder_per_trial(sweep_run):
    from recipes import train

    assert sweep_run.code == 0
    study = load_study(sweep_run.dir)
    assert len(study.trials) == 4 and len(finished(study)) == 4
    assert sorted(p.name for p in sweep_run.dir.glob("trial-*")) == [f"trial-{n:04d}" for n in range(4)]
    for trial in study.trials:
        run = sweep_run.dir / f"trial-{trial.number:04d}"
        hparams = yaml.safe_load((run / "hparams.yaml").read_text())
        summary = yaml.safe_load((run / "summary.yaml").read_text())
        status = yaml.safe_load((run / "status.yaml").read_text())
        assert hparams["sweep"] == {"name": "s", "trial": trial.number} and summary["sweep/trial"] == trial.number
        assert hparams["output_dir"] == str(sweep_run.dir) and hparams["run_name"] == run.name
        for name, value in trial.params.items():  # the run trained with the trial's parameters
            assert hparams[name] == pytest.approx(value)
        assert hparams["max_epochs"] == 2 and hparams["monitor"] == "valid/mcc"  # fixed flags reach every trial
        again = train.parse(["--config", str(run / "hparams.yaml")])
        assert {k: getattr(again, k) for k in trial.params} == trial.params  # train.py --config runs it again
        losses = best_loss(run)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert status["status"] == "finished" and len(losses) == 2
            assert trial.value == pytest.approx(min(losses), abs=1e-6)  # the best valid/loss of the run
        else:
            assert status["status"] == "pruned" and summary["pruned"] is True
        assert [trial.intermediate_values[e] for e in sorted(trial.intermediate_values)] == \
            pytest.approx(losses, abs=1e-6)
    saved = yaml.safe_load((sweep_run.dir / "sweep.yaml").read_text())
    assert saved["metric"] == "valid/loss" and saved["direction"] == "min" and saved["train_args"] == sweep_run.fixed
    assert yaml.safe_load((sweep_run.dir / "space.yaml").read_text()) == yaml.safe_load(SPACE)
    # The study itself holds the settings, and says who ran each trial, on which machine and where
    assert study.user_attrs["sweep"]["train_args"] == sweep_run.fixed and study.user_attrs["sweep"]["n_trials"] == 4
    import socket

    for trial in study.trials:
        assert trial.user_attrs["host"] == socket.gethostname() and trial.user_attrs["worker"].startswith(
            socket.gethostname() + ":")
        assert trial.user_attrs["run_dir"] == str(sweep_run.dir / f"trial-{trial.number:04d}")


def test_a_trial_whose_metric_is_bad_is_pruned_and_keeps_its_folder(sweep_run):
    study = load_study(sweep_run.dir)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.number, t.params, t.intermediate_values) for t in study.trials]
    for trial in pruned:
        run = sweep_run.dir / f"trial-{trial.number:04d}"
        losses = best_loss(run)
        epoch = trial.user_attrs["pruned_epoch"]
        assert len(losses) == epoch + 1 < 2  # stopped after that validation, before max_epochs
        # Worse than the median of the earlier finished trials at that epoch (computed from their metrics.csv).
        earlier = [best_loss(sweep_run.dir / f"trial-{t.number:04d}")[epoch] for t in study.trials
                   if t.number < trial.number and t.state == optuna.trial.TrialState.COMPLETE]
        assert earlier and losses[epoch] > pd.Series(earlier).median()
        summary = yaml.safe_load((run / "summary.yaml").read_text())
        assert summary["pruned/epoch"] == epoch and summary["pruned/valid/loss"] == pytest.approx(losses[epoch])
        assert (run / "checkpoints" / "best" / "config.json").is_file() and (run / "report.html").is_file()


def test_the_report_sorts_the_trials_and_gives_the_best_command(sweep_run):
    study = load_study(sweep_run.dir)
    document = (sweep_run.dir / "report.html").read_text()
    assert "http://" not in document and "https://" not in document and "<script src" not in document
    table = html_table(document, "trials")
    assert len(table) == 4
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, t.number))
    values = [float(v) for v in table["valid/loss"][:len(complete)]]
    assert values == sorted(values) == pytest.approx([t.value for t in complete], abs=1e-4)
    best = complete[0]
    assert [int(n) for n in table["trial"][:len(complete)]] == [t.number for t in complete]
    assert table["state"].tolist() == ["COMPLETE"] * len(complete) + ["PRUNED"] * (4 - len(complete))
    flags = {"lr": "--lr", "warmup_ratio": "--warmup-ratio", "batch_size": "--batch-size"}
    expected = shlex.join(["python", "scripts/train.py", *sweep_run.fixed,
                           *(f"{flags[k]}={v!r}" for k, v in best.params.items())])
    assert f'<pre id="best-command">{expected}</pre>' in document.replace("&#x27;", "'").replace("&quot;", '"')
    assert document.count("data:image/png;base64,") == 3  # history, per-epoch curves, importance
    assert "Parameter importance" in document and 'id="importance"' in document


def test_the_best_command_reproduces_the_best_trial(sweep_run, tmp_path):
    """The report's command, run by train.py, gives the best trial's valid/loss again (runs are deterministic)."""
    best = load_study(sweep_run.dir).best_trial
    flags = {"lr": "--lr", "warmup_ratio": "--warmup-ratio", "batch_size": "--batch-size"}
    params = [f"{flags[k]}={v!r}" for k, v in best.params.items()]
    result = run_script("train.py", *sweep_run.fixed, *params, "--output-dir", str(tmp_path), "--run-name", "again",
                        cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert min(best_loss(tmp_path / "again")) == pytest.approx(best.value, abs=1e-6)


@needs_chromium
def test_the_report_in_headless_chromium(sweep_run, tmp_path):
    from selenium.webdriver.common.by import By

    from conftest import first_screen_and_width

    with headless_chromium(tmp_path / "profile", size=(1280, 900)) as driver:
        driver.get(f"file://{sweep_run.dir / 'report.html'}")
        tops, scroll_width, width = first_screen_and_width(driver, ["headline", "best-command"])
        assert scroll_width <= width and all(top < 900 for top in tops.values()), (tops, scroll_width, width)
        assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert driver.execute_script("return document.images.length") == 3 and broken == 0
        rows = driver.find_elements(By.CSS_SELECTOR, "#trials tbody tr")
        assert len(rows) == 4
        driver.find_element(By.XPATH, "//table[@id='trials']//th[text()='trial']").click()
        numbers = [int(r.find_elements(By.TAG_NAME, "td")[0].text) for r in
                   driver.find_elements(By.CSS_SELECTOR, "#trials tbody tr")]
        assert numbers == [0, 1, 2, 3]
        study = load_study(sweep_run.dir)
        assert driver.find_element(By.ID, "best-command").text.startswith("python scripts/train.py --model")
        assert f"in trial {study.best_trial.number}," in driver.find_element(By.ID, "headline").text


def test_a_killed_sweep_resumes_without_losing_or_repeating_a_trial(tmp_path, tiny_cola, model_dir):
    """SIGKILL during trial 1: the resumed sweep keeps trial 0 as it was, finds trial 1's worker dead by its missing
    heartbeat, runs trial 1's parameters again as a new trial, and ends with exactly --n-trials finished trials."""
    (tmp_path / "space.yaml").write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    argv = ["--name", "k", "--output-dir", str(tmp_path / "sweeps"), "--space", str(tmp_path / "space.yaml"),
            "--n-trials", "3", "--pruner", "none", "--heartbeat-interval", "1", "--grace-period", "2",
            *fixed_flags(model_dir, tiny_cola, epochs=1)]
    sweep_dir = tmp_path / "sweeps" / "k"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "sweep.py"), *argv], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (sweep_dir / "trial-0001" / "hparams.yaml").is_file():  # trial 1 is training
            assert process.poll() is None and time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    study = load_study(sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    killed_params = study.trials[1].params
    first = {p.name: p.read_bytes() for p in (sweep_dir / "trial-0000").glob("*.*")}

    result = run_script("sweep.py", *argv[:-len(fixed_flags(model_dir, tiny_cola, epochs=1))], "--resume",
                        cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"queued again: trial 1 (its worker {study.trials[1].user_attrs['worker']} stopped" in result.stdout
    study = load_study(sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert len(finished(study)) == 3 and "failed_reason" not in study.trials[1].user_attrs
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == 1]  # trial 2 or 3: whenever the grace
    assert retry.number in (2, 3) and retry.params == killed_params           # period ran out
    assert {p.name: p.read_bytes() for p in (sweep_dir / "trial-0000").glob("*.*")} == first  # not run again
    for number in (2, 3):
        hparams = yaml.safe_load((sweep_dir / f"trial-{number:04d}" / "hparams.yaml").read_text())
        assert hparams["sweep"]["trial"] == number and hparams["lr"] == pytest.approx(study.trials[number].params["lr"])
    assert yaml.safe_load((sweep_dir / "trial-0001" / "status.yaml").read_text())["status"] == "running"  # kept

    again = run_script("sweep.py", "--name", "k", "--output-dir", str(tmp_path / "sweeps"), "--n-trials", "3",
                       "--resume", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0 and "3 of 3 trials done" in again.stdout and len(load_study(sweep_dir).trials) == 4


@pytest.mark.parametrize("space, fragment", [
    ("lr: {low: 1.0e-5, high: 1.0e-4}\nlearning_rate: {low: 0.1, high: 0.2}\n",
     "learning_rate: not a flag of train.py"),
    ("run_name: [a, b]\n", "run_name: set by sweep.py"),
    ("lr: {low: 1.0e-3, high: 1.0e-5}\n", "lr: the range is empty: low 0.001 > high 1e-05"),
    ("batch_size: {choices: []}\n", "batch_size: choices is empty"),
    ("batch_size: {low: 8.5, high: 32}\n", "batch_size: 8.5 is of the wrong type"),
    ("lr: {low: fast, high: 1.0e-3}\n", "lr: low and high must be finite numbers"),
    ("warmup_ratio: {low: 0.0, high: 1.5}\n", "warmup_ratio: 1.5 is of the wrong type or out of range"),
    ("precision: [32, bf8]\n", "precision: choice 'bf8' is of the wrong type"),
    ("compile: {low: 0, high: 1}\n", "--compile is a switch"),
    ("lr: {low: 0.0, high: 1.0e-3, log: true}\n", "a log range needs low > 0"),
    ("lr: 0.001\n", "fix a value on the command line instead"),
    ("- lr\n", "expected a mapping of train.py flags"),
    ("lr: {low: 1.0e-5, high: 1.0e-4}\nlr: [0.1]\n", "line 2: lr is given a second time"),
])
def test_a_bad_space_is_one_line_and_writes_nothing(space, fragment, tmp_path, tiny_cola, model_dir, capsys):
    (tmp_path / "space.yaml").write_text(space)
    result = sweep_inprocess(["--name", "bad", "--output-dir", str(tmp_path / "out"), "--space",
                              str(tmp_path / "space.yaml"), *fixed_flags(model_dir, tiny_cola)], capsys)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--lr", "1e-3"], "--lr is both fixed on the command line and searched"),
    (["--run-name", "x"], "--run-name: set by sweep.py for each trial"),
    (["--bogus", "1"], "sweep.py: error: unrecognized arguments: --bogus 1"),
    (["--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["--metric", "valid/nope"], "--metric 'valid/nope' is not a metric this model logs"),
    (["--resume"], "--resume needs the --name"),
    (["--name", "a/b"], "--name 'a/b' must be one plain folder name"),
])
def test_bad_flags_are_one_line_and_write_nothing(extra, fragment, tmp_path, tiny_cola, model_dir, capsys):
    (tmp_path / "space.yaml").write_text("lr: {low: 1.0e-5, high: 1.0e-4, log: true}\n")
    name = [] if extra[0] in ("--resume", "--name") else ["--name", "bad"]
    result = sweep_inprocess([*name, "--output-dir", str(tmp_path / "out"), "--space", str(tmp_path / "space.yaml"),
                              *fixed_flags(model_dir, tiny_cola), *extra], capsys)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_a_worker_with_other_settings_is_refused_naming_each_difference(sweep_run, capsys):
    """An existing sweep is joined by a worker that gives its settings or none; other settings are refused in one
    line that names each difference, and nothing is written."""
    output, before = str(sweep_run.dir.parent), sorted(p.name for p in sweep_run.dir.rglob("*"))
    other = sweep_run.dir.parent.parent / "other.yaml"
    other.write_text("lr: {low: 1.0e-5, high: 1.0e-4}\n")
    result = sweep_inprocess(["--name", "s", "--output-dir", output, "--space", str(other)], capsys)
    assert_one_line_error(result, "sweep 's' has other settings (--space: batch_size, warmup_ratio)")
    result = sweep_inprocess(["--name", "s", "--output-dir", output, "--metric", "valid/acc", "--n-trials", "5",
                              "--max-epochs", "1"], capsys)
    assert_one_line_error(result, "--metric 'valid/loss' -> 'valid/acc'; --n-trials 4 -> 5; train.py flags")
    assert sorted(p.name for p in sweep_run.dir.rglob("*")) == before
    result = sweep_inprocess(["--name", "s", "--output-dir", output], capsys)  # joins, and finds nothing to do
    assert result.returncode == 0 and "4 of 4 trials done, 0 running" in result.stdout


def test_the_script_refuses_in_one_line(tmp_path):
    """As a user runs it: a real process, exit code 2, one line."""
    (tmp_path / "space.yaml").write_text("lr: {low: 1.0e-3, high: 1.0e-5}\n")
    result = run_script("sweep.py", "--name", "x", "--output-dir", str(tmp_path / "out"), "--space",
                        str(tmp_path / "space.yaml"), cwd=tmp_path)
    assert_one_line_error(result, "the range is empty")
    assert not (tmp_path / "out").exists()


def _worker(argv, output_dir, cwd):
    """sweep.py as a process of its own, as on another machine (its own --output-dir)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "sweep.py"), *argv, "--output-dir", str(output_dir)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_workers_that_start_together_draw_different_points_and_a_lone_worker_draws_as_before(tmp_path, kind):
    """Two workers that join an empty study at once see the same number of trials; seeded by their first trial's
    number (handed out by the storage) they still draw different points. A lone worker draws exactly what a plain
    Optuna sampler with the sweep's seed draws."""
    from recipes.sweep import _SeededAtFirstTrial

    make = optuna.samplers.TPESampler if kind == "tpe" else optuna.samplers.RandomSampler
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=storage)
    a, b = (optuna.load_study(study_name="s", storage=storage,
                              sampler=_SeededAtFirstTrial(lambda number: make(seed=7 + number))) for _ in "ab")
    drawn = []
    for _ in range(3):
        for study in (a, b):
            trial = study.ask()
            drawn.append(trial.suggest_float("lr", 1e-4, 1e-2, log=True))
            study.tell(trial, 0.5)
    assert len(set(drawn)) == 6

    alone = optuna.create_study(sampler=_SeededAtFirstTrial(lambda number: make(seed=7 + number)))
    plain = optuna.create_study(sampler=make(seed=7))
    for study in (alone, plain):
        study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1e-2, log=True), n_trials=4)
    assert [t.params for t in alone.trials] == [t.params for t in plain.trials]


def test_two_workers_share_a_postgresql_study_and_a_killed_workers_trial_is_run_again(tmp_path, tiny_cola, model_dir,
                                                                                      postgres_db):
    """Two sweep.py processes with separate output folders (two machines) on one study in PostgreSQL: both run
    trials, none runs twice, and the study ends with --n-trials finished trials. Worker B is killed with SIGKILL
    during a trial: worker A finds it dead by its missing heartbeat and runs its parameters again. A third process
    builds the report from the study alone and it lists every trial with its worker and machine."""
    import socket

    (tmp_path / "space.yaml").write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    argv = ["--name", "pg", "--storage", postgres_db, "--space", str(tmp_path / "space.yaml"), "--n-trials", "6",
            "--pruner", "none", "--sampler", "random", "--heartbeat-interval", "1", "--grace-period", "3",
            *fixed_flags(model_dir, tiny_cola, epochs=1)]
    a = _worker(argv, tmp_path / "a", tmp_path)
    b = _worker(argv, tmp_path / "b", tmp_path)
    try:
        deadline = time.monotonic() + 300
        while len(list((tmp_path / "b" / "pg").glob("trial-*/hparams.yaml"))) < 2:  # B trains its second trial
            assert b.poll() is None and a.poll() is None and time.monotonic() < deadline, b.communicate()
            time.sleep(0.05)
        b.send_signal(signal.SIGKILL)
        b.wait()
        out, err = a.communicate(timeout=300)
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.kill()
    assert a.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="pg", storage=postgres_db)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 6 and states.count("FAIL") == 1 and len(states) == 7
    (killed,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert killed.user_attrs["worker"].endswith(f":{b.pid}") and "failed_reason" not in killed.user_attrs
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert retry.user_attrs["worker"].endswith(f":{a.pid}") and f"queued again: trial {killed.number}" in out
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len({t.params["lr"] for t in complete}) == 6  # no parameters run twice
    for trial in study.trials:  # each trial's run folder is on the machine (output folder) that ran it
        folder = "a" if trial.user_attrs["worker"].endswith(f":{a.pid}") else "b"
        assert trial.user_attrs["run_dir"] == str(tmp_path / folder / "pg" / f"trial-{trial.number:04d}")
        assert trial.user_attrs["host"] == socket.gethostname()
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in complete} <= {str(a.pid), str(b.pid)}
    assert any(t.user_attrs["worker"].endswith(f":{b.pid}") for t in complete), "worker B never finished a trial"
    assert sorted(p.name for p in (tmp_path / "a" / "pg").glob("trial-*")) == \
        [f"trial-{t.number:04d}" for t in study.trials if t.user_attrs["worker"].endswith(f":{a.pid}")]

    report = run_script("sweep.py", "--name", "pg", "--storage", postgres_db, "--report-only", "--output-dir",
                        str(tmp_path / "c"), cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert report.returncode == 0, report.stderr[-2000:]
    table = html_table((tmp_path / "c" / "pg" / "report.html").read_text(), "trials")
    assert sorted(int(n) for n in table["trial"]) == list(range(7))
    assert set(table["host"]) == {socket.gethostname()} and "worker" in table
    assert not list((tmp_path / "c" / "pg").glob("trial-*"))  # no trial was run


def test_a_worker_stopped_with_sigterm_queues_its_trial_again_and_exits(tmp_path, tiny_cola, model_dir):
    """SIGTERM (a preempted job) during a trial: the trial stops at its next step, is marked and queued again with the
    same parameters, and the worker exits 143 with one line naming the command that continues."""
    (tmp_path / "space.yaml").write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    argv = ["--name", "t", "--space", str(tmp_path / "space.yaml"), "--n-trials", "2", "--pruner", "none",
            "--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "3", "--batch-size", "4",
            "--log-every-n-steps", "1", "--no-progress-bar"]
    worker = _worker(argv, tmp_path / "sweeps", tmp_path)
    metrics = tmp_path / "sweeps" / "t" / "trial-0000" / "metrics.csv"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) > 2):
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 143, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted (SIGTERM)")]
    assert len(lines) == 2 and "Continue with: python scripts/sweep.py --name t" in lines[-1]
    study = load_study(tmp_path / "sweeps" / "t")
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"] and study.trials[0].user_attrs["interrupted"]
    status = yaml.safe_load((tmp_path / "sweeps" / "t" / "trial-0000" / "status.yaml").read_text())
    assert status["status"] == "interrupted"

    again = run_script("sweep.py", "--name", "t", "--output-dir", str(tmp_path / "sweeps"), "--resume", cwd=tmp_path,
                       env={"HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    study = load_study(tmp_path / "sweeps" / "t")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].params == study.trials[0].params and study.trials[1].user_attrs["retry_of"] == 0


def test_a_trial_whose_sampled_flag_is_refused_fails_with_its_reason_and_the_sweep_goes_on(tmp_path, model_dir,
                                                                                         capsys):
    """A sampled --label-column the data does not have makes train.py refuse the trial's data (exit 2): the trial is
    recorded as failed with that one line, counts against --n-trials, the report says why, and the others run."""
    from conftest import tiny_rows

    for name, rows in (("t.csv", tiny_rows(48, seed=1)), ("v.csv", tiny_rows(20, seed=2))):
        (tmp_path / name).write_text("text,label\n" + "".join(f'"{s}",{y}\n' for y, s in rows))
    (tmp_path / "space.yaml").write_text("label_column: [label, gold]\n")
    result = sweep_inprocess(["--name", "f", "--output-dir", str(tmp_path / "sweeps"), "--space",
                              str(tmp_path / "space.yaml"), "--n-trials", "4", "--sampler", "random",
                              "--sampler-seed", "1", "--pruner", "none", "--model", str(model_dir), "--train-file",
                              str(tmp_path / "t.csv"), "--validation-file", str(tmp_path / "v.csv"), "--max-epochs",
                              "1", "--no-progress-bar"], capsys)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    study = load_study(tmp_path / "sweeps" / "f")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(study.trials) == 4 and failed and len(failed) < 4
    for trial in study.trials:
        assert (trial.state.name == "FAIL") == (trial.params["label_column"] == "gold")
    for trial in failed:
        assert "no column 'gold'" in trial.user_attrs["failed_reason"] and "pass --label-column" in \
            trial.user_attrs["failed_reason"]
        assert f"trial {trial.number} failed: " in result.stderr
        assert not (tmp_path / "sweeps" / "f" / f"trial-{trial.number:04d}").exists()  # refused before writing
    table = html_table((tmp_path / "sweeps" / "f" / "report.html").read_text(), "trials")
    notes = dict(zip(table["trial"].astype(int), table["note"]))
    assert all(notes[t.number].startswith("failed: ") and "no column 'gold'" in notes[t.number] for t in failed)
