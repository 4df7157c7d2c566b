"""Hyperparameter sweeps with Optuna: every trial is a full train.py run in its own run folder, with its loggers;
workers on any number of machines share one sweep through the study's storage. The engine: recipes/sweep.py.

    python scripts/sweep.py --name s1 --n-trials 16 --data-dir data/cola --max-epochs 3
    python scripts/sweep.py --name s1 --resume                  # continue a stopped sweep
    python scripts/sweep.py --name s1 --storage postgresql://user@db-host/sweeps ...   # the same on every machine
    python scripts/sweep.py --name s1 --storage postgresql://user@db-host/sweeps --report-only

Flags that sweep.py does not know are train.py's, fixed for every trial (`--data-dir`, `--max-epochs`, `--logger`,
...). This worker's folder `<output-dir>/<name>` holds `study.db` (the study, unless --storage names another),
`sweep.yaml` and `space.yaml` (the sweep's settings, as the study records them), one train.py run folder per trial
it ran (`trial-0000/`, ...) and `report.html`.
"""
from recipes import cli
from recipes.sweep import main

if __name__ == "__main__":
    cli.exit(cli.run_main(main))
