"""Validate a saved model on a validation set with the training run's metrics and loggers. The flags and the recipe:
recipes/evaluate.py.

    python scripts/evaluate.py --checkpoint runs/<run>/checkpoints/best --data-dir data/cola
    python scripts/evaluate.py --checkpoint runs/<run>/checkpoints/best --train-file t.csv --validation-file v.csv

Takes the data flags of train.py; the class names and their order are the checkpoint's (config id2label). The last
line on stdout is a JSON object of the metrics.
"""
from recipes import cli
from recipes.evaluate import main

if __name__ == "__main__":
    cli.exit(cli.run_main(main))
