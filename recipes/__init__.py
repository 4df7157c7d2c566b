"""The programs behind the scripts, as a library: each takes the flags a script parsed and composes data, models,
the trainer and tracking. train.py (fine-tuning: its flags and `fit`), evaluate.py, sweep.py (the Optuna sweep engine,
its search space in space.py and its report in sweep_report.py), record.py (the tracker flags, the run's logger and
report), cli.py (what every command line shares: one-line errors, argument types, --config replay, SIGTERM)."""
