"""A user's data files as tables of exact values: CSV and TSV (every cell a string, as written), and JSON lines
(read line by line, so that a bad line is named by its number, and numbers are kept as the digits written). Every
problem is one `DataError` line naming the file and the line; nothing is parsed that could take minutes or gigabytes.
"""
from __future__ import annotations

import csv
import json
import os

from data.errors import DataError
from tracking.files import first_line

FILE_TYPES = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json"}
# The longest line a data file may hold. A sentence to classify is far shorter (and the model reads at most
# --max-length tokens of it); a longer line is a file with no line breaks, which pandas would take minutes and
# gigabytes to parse before failing.
MAX_LINE_BYTES = 1 << 20


class JsonNumber(str):
    """A number of a JSON line, kept as the digits written (12345678901234567890 stays itself: no float round trip),
    and still known to have been a number."""


def read_table(path: str):
    """A CSV, TSV or JSON-lines file as a DataFrame of exact values (strings; JSON numbers as `JsonNumber`)."""
    import pandas as pd

    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    kind = FILE_TYPES.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type; name it .csv, .tsv, .json or .jsonl (JSON lines)")
    check_line_lengths(path)
    if kind == "json":
        return pd.DataFrame(read_json_lines(path), dtype=object)  # each value as JSON gave it
    try:
        # the C parser has no field-size limit (Python's csv module stops at 128 KiB per field)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                           encoding="utf-8-sig", engine="c", quoting=csv.QUOTE_NONE if kind == "tsv" else
                           csv.QUOTE_MINIMAL)
    except UnicodeDecodeError:
        raise DataError(f"{path}: bytes that are not UTF-8; re-encode the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; it needs a header line and rows") from None
    except (ValueError, pd.errors.ParserError) as exc:
        hint = ""
        if kind == "csv" and _looks_tab_separated(path):
            hint = "; it looks tab-separated: name it .tsv (or save it with commas)"
        raise DataError(f"{path}: cannot be read as {kind.upper()} ({first_line(exc)}){hint}") from None


def _looks_tab_separated(path: str) -> bool:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    return header.count("\t") > 0 and header.count(",") == 0


def check_line_lengths(path: str, limit: int = MAX_LINE_BYTES) -> None:
    """Refuse a file with a line longer than `limit` bytes, reading it in chunks (before any parser sees it)."""
    line, length = 1, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            start = 0
            while True:
                end = chunk.find(b"\n", start)
                length += (len(chunk) if end < 0 else end) - start
                if length > limit:
                    raise DataError(f"{path}:{line}: a line of more than {limit // (1 << 20)} MiB; rows longer than "
                                    "that are refused (is this a file with no line breaks?); split it into one "
                                    "row a line")
                if end < 0:
                    break
                line, length, start = line + 1, 0, end + 1


def read_json_lines(path: str) -> list[dict]:
    """The objects of a JSON-lines file, one a line (blank lines skipped)."""
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line, parse_int=JsonNumber, parse_float=JsonNumber)
                except json.JSONDecodeError as exc:
                    if not rows and line.lstrip().startswith("["):
                        raise DataError(_not_json_lines(path)) from None
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}); each line "
                                    "must be one JSON object") from None
                if not isinstance(value, dict):
                    if isinstance(value, list) and not rows:
                        raise DataError(_not_json_lines(path))
                    kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
                        type(value), "a number")
                    raise DataError(f"{path}:{number}: {kind} where a JSON object is expected; each line must be one "
                                    'object such as {"text": "...", "label": "..."}')
                rows.append(value)
    except UnicodeDecodeError:
        raise DataError(f"{path}: bytes that are not UTF-8; re-encode the file as UTF-8") from None
    if not rows:
        raise DataError(f"{path}: empty file; it needs one JSON object a line")
    return rows


def _not_json_lines(path: str) -> str:
    return (f"{path}: not JSON lines: the file holds one JSON array; write one object a line (pandas: "
            "to_json(orient='records', lines=True))")
