"""A sweep's search space: one entry per train.py flag, in YAML (`--space FILE`), checked against train.py's own
argument types at both ends of every range before anything is written. W&B's `min`/`max`/`values` are read too.

    lr: {low: 1.0e-5, high: 2.0e-4, log: true}     a number in [A, B] on a log scale; `step: S` for a grid
    max_epochs: {low: 2, high: 5}                   integers for flags that take integers
    batch_size: {choices: [16, 32]}                 or `batch_size: [16, 32]`
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from recipes.cli import UsageError, load_yaml
from recipes.train import build_parser, parse

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
# train.py flags the sweep sets for each trial; neither fixed nor searched.
CONTROLLED = ("output_dir", "run_name", "resume", "help")


def train_parser():
    """train.py's own parser, naming sweep.py in its one-line errors; flags must be spelt in full, so that a fixed
    flag and a searched one are never the same flag under two spellings."""
    parser = build_parser(prog="sweep.py")
    parser.allow_abbrev = False
    return parser


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
        raise UsageError(f"{where}: expected a mapping of train.py flags to search ranges, like "
                         "'lr: {low: 1.0e-5, high: 1.0e-4, log: true}'")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    params = []
    for key, spec in space.items():
        name = str(key).lstrip("-").replace("-", "_")
        bad = f"{where}: {key}:"
        if name not in actions or name in CONTROLLED or name == "config":
            why = "set by sweep.py for each trial" if name in CONTROLLED else "not a flag of train.py"
            raise UsageError(f"{bad} {why}; search train.py's flags (python scripts/train.py --help)")
        action = actions[name]
        param = Param(name=name, flag=action.option_strings[-1], switch=action.nargs == 0)
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, dict):
            raise UsageError(f"{bad} expected {{low: A, high: B}} or {{choices: [...]}}, got {spec!r}; fix a "
                             f"value on the command line instead ({param.flag} VALUE)")
        spec = {{"min": "low", "max": "high", "values": "choices"}.get(k, k): v for k, v in spec.items()}
        unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
        if unknown:
            raise UsageError(f"{bad} unknown key {', '.join(map(str, unknown))}; use low, high, log, step or "
                             "choices")
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise UsageError(f"{bad} give either choices or low/high, not both")
            params.append(_choices(param, action, spec["choices"], bad))
        else:
            params.append(_range(param, action, spec, bad))
    return params


def _choices(param: Param, action, choices, bad: str) -> Param:
    if not isinstance(choices, list) or not choices:
        raise UsageError(f"{bad} choices is empty; give a list of one value or more")
    if len({repr(c) for c in choices}) != len(choices):
        raise UsageError(f"{bad} choices repeat a value ({choices})")
    for value in choices:
        if param.switch:
            ok = isinstance(value, bool)
        else:
            ok = not isinstance(value, (bool, dict, list)) and _accepts(action, value)[0]
        if not ok:
            expected = "true or false" if param.switch else f"values that {param.flag} takes"
            raise UsageError(f"{bad} choice {value!r} is of the wrong type: {param.flag} takes {expected}")
    param.choices = list(choices)
    return param


def _range(param: Param, action, spec: dict, bad: str) -> Param:
    if param.switch:
        raise UsageError(f"{bad} {param.flag} is a switch; search it with choices: [true, false]")
    if "low" not in spec or "high" not in spec:
        raise UsageError(f"{bad} a range needs both low and high")
    low, high, step = _number(spec["low"]), _number(spec["high"]), spec.get("step")
    if low is None or high is None:
        raise UsageError(f"{bad} low and high must be finite numbers, got {spec['low']!r} and {spec['high']!r}")
    if low > high:
        raise UsageError(f"{bad} the range is empty: low {low!r} > high {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{bad} log must be true or false, got {log!r}")
    if log and low <= 0:
        raise UsageError(f"{bad} a log range needs low > 0, got {low!r}")
    if step is not None:
        step = _number(step)
        if step is None or step <= 0 or log:
            raise UsageError(f"{bad} step must be a positive number, and cannot go with log")
    parsed = []
    for value in (low, high):
        ok, value_parsed = _accepts(action, value)
        if not ok or not isinstance(value_parsed, (int, float)):
            raise UsageError(f"{bad} {value!r} is of the wrong type or out of range for {param.flag} "
                             f"(python scripts/train.py --help)")
        parsed.append(value_parsed)
    param.integer = all(isinstance(v, int) and not isinstance(v, bool) for v in parsed)
    if param.integer and step is not None and not float(step).is_integer():
        raise UsageError(f"{bad} {param.flag} takes integers, so step must be one, got {step!r}")
    param.low, param.high, param.log = parsed[0], parsed[1], log
    param.step = (int(step) if param.integer else float(step)) if step is not None else None
    return param


def load_space(path: str | None) -> tuple[dict, str]:
    """(the space mapping, its YAML text) from `path`, else the default space."""
    text = DEFAULT_SPACE
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"--space {path}: cannot read it ({exc.strerror or exc})") from None
    return load_yaml(text, f"--space {path}"), text


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
    parser = train_parser()
    given = given_flags(parser, fixed)
    controlled = sorted(given & set(CONTROLLED))
    if controlled:
        flags = ", ".join("--" + d.replace("_", "-") for d in controlled)
        raise UsageError(f"{flags}: set by sweep.py for each trial (trials go to <output-dir>/<name>/trial-N; "
                         "--resume continues a sweep); remove it")
    both = [p.flag for p in params if p.name in given]
    if both:
        raise UsageError(f"{', '.join(both)} is both fixed on the command line and searched in the space; "
                         "remove one")
    args = parse(fixed, parser)
    for end in (0, -1):  # every searched flag at one end of its range together: each combination parses
        probe = [t for p in params for t in p.tokens(p.choices[end] if p.choices is not None else (p.low, p.high)[end])]
        parse([*fixed, *probe], parser)
    return args


