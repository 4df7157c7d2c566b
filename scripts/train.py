"""Fine-tune a sequence classifier on CoLA (or any GLUE task, CSV/JSON-lines files, a Hugging Face dataset) and
monitor the run. The flags and the recipe: recipes/train.py.

    python scripts/train.py                                   # all-MiniLM-L6-v2 on CoLA, shipped with the project
    python scripts/train.py --data-dir /data/cola             # CoLA from another copy of its GLUE TSV files
    python scripts/train.py --train-file t.csv --validation-file v.csv   # your own classes
    accelerate launch scripts/train.py ...                    # several processes / GPUs
"""
from recipes import cli
from recipes.train import main

if __name__ == "__main__":
    cli.exit(cli.run_main(main))
