"""What a label means: the exact text the data holds is the class name, never a number's round trip (`01` and `1`
are two classes, and 12345678901234567890 stays itself). The classes and their order, each row's class id, and one
warning line when labels that look alike (`ACCEPTABLE` and ` acceptable`, `1` and `01`, a number and a string) are
separate classes. A label that is a non-whole number is a regression target, which is refused."""
from __future__ import annotations

import logging
import math
import re
from decimal import Decimal

from data.errors import DataError
from data.files import JsonNumber

log = logging.getLogger(__name__)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_REGRESSION = "is not a class; regression (a number as the target) is not supported, only classification"


def label_text(value, where: str, row: int, column: str, class_names) -> str:
    """A label as its class name: the text as written; a ClassLabel id as its name; JSON true/false as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if class_names is not None and isinstance(value, int) and not isinstance(value, JsonNumber):
        if 0 <= value < len(class_names):
            return class_names[value]
        raise DataError(f"{where}: row {row}: label {value} is not a class id; this split has no labels")
    if isinstance(value, float) and not isinstance(value, JsonNumber):  # a dataset's float column
        if math.isnan(value):
            value = ""
        elif not value.is_integer():
            raise DataError(f"{where}: row {row}: label {value!r} in column {column!r} {_REGRESSION}")
        else:
            value = str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars from a dataset
        return label_text(value.item(), where, row, column, class_names)
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: row {row}: label {value!r} in column {column!r} is neither a string nor a number")
    if not value.strip():
        raise DataError(f"{where}: row {row}: empty or missing label in column {column!r}")
    if _NUMBER.fullmatch(value.strip()) and not Decimal(value.strip()) == Decimal(value.strip()).to_integral_value():
        raise DataError(f"{where}: row {row}: label {value.strip()!r} in column {column!r} {_REGRESSION}")
    return str(value)


def _key(label: str):
    """Labels with one key look alike: the same number (`1`, `01`, `1.0`), or the same text but for case and
    surrounding spaces."""
    text = label.strip()
    return ("number", Decimal(text).normalize()) if _NUMBER.fullmatch(text) else ("text", text.casefold())


def sort_key(label: str):
    """Numbers by value, then other labels by their text."""
    text = label.strip()
    return (0, Decimal(text), label) if _NUMBER.fullmatch(text) else (1, label, label)


def warn_look_alikes(labels, where: str, column: str) -> None:
    """One warning line naming the groups of labels that are separate classes though they look alike."""
    groups: dict = {}
    for label in dict.fromkeys(labels):
        groups.setdefault(_key(label), []).append(label)
    alike = [group for group in groups.values() if len(group) > 1]
    if alike:
        shown = "; ".join(" and ".join(repr(label) for label in group) for group in alike[:5])
        log.warning("warning: %s: labels in column %r that differ only by case, spaces or how a number is written "
                    "are separate classes: %s%s. Labels are the text in the file; make them the same text to merge "
                    "them", where, column, shown, f" (and {len(alike) - 5} more)" if len(alike) > 5 else "")


def warn_mixed_types(values, where: str, column: str) -> None:
    """One warning line when a JSON column holds both numbers and strings (each is a class by its text)."""
    numbers = [v for v in values if isinstance(v, JsonNumber)]
    texts = [v for v in values if isinstance(v, str) and not isinstance(v, JsonNumber)]
    if numbers and texts:
        log.warning("warning: %s: column %r mixes JSON numbers and strings (such as %s and %r); each label is a "
                    "class by its text", where, column, numbers[0], texts[0])


def label_ids(values: dict, where: dict, labels, column: str, named_by: str) -> tuple[tuple[str, ...], dict]:
    """(class names in id order, ids per split) from each split's label texts. Names: `labels` when given (the
    labels must be among them, or be integer ids into them when they are all integers and the names are not), else
    the sorted training labels. Every problem is one line; validation labels that never occur in training are all
    named in it."""
    if labels is not None or "train" not in values:
        names = tuple(labels)
        by_position = all(_INTEGER.fullmatch(v.strip()) for split in values.values() for v in split) and \
            not all(_INTEGER.fullmatch(n.strip()) for n in names)
        keys = {str(i): i for i in range(len(names))} if by_position else {n: i for i, n in enumerate(names)}
    else:
        names = tuple(sorted(dict.fromkeys(values["train"]), key=sort_key))
        keys, by_position = {n: i for i, n in enumerate(names)}, False
    if len(names) < 2:
        raise DataError(f"{where.get('train') or where['validation']}: only one class ({', '.join(names) or 'none'}) in column {column!r}; "
                        "a classifier needs at least 2")
    ids = {}
    for split, split_values in values.items():
        unknown: dict[str, int] = {}
        for row, value in enumerate(split_values, start=1):
            key = str(int(value)) if by_position else value
            if key not in keys:
                unknown.setdefault(value, row)
        if unknown:
            listed = ", ".join(f"{v!r} (row {row})" for v, row in list(unknown.items())[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            known = ", ".join(names) if len(names) <= 20 else f"{len(names)} classes"
            if labels is not None:
                raise DataError(f"{where[split]}: labels not in {named_by} ({known}): {listed}{more}")
            raise DataError(f"{where[split]}: labels that never occur in the training data: {listed}{more}; a class "
                            "must have training examples")
        ids[split] = [keys[str(int(v)) if by_position else v] for v in split_values]
    if labels is not None and "train" in ids:
        seen = set(ids["train"])
        absent = [n for i, n in enumerate(names) if i not in seen]
        if absent:
            raise DataError(f"{where['train']}: no training example of class {', '.join(absent)} from {named_by}; "
                            "a class needs training examples")
    return names, ids
