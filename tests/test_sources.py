"""Data sources (data/sources.py): files, save_to_disk folders, GLUE tasks, class names, and the one-line errors."""
import json

import datasets
import pandas as pd
import pytest

from data import DataError, DataSource, TextClassificationDataModule, load_cola

ANIMALS, PEOPLE, THINGS = ["the cat", "a dog"], ["john", "mary", "the teacher"], ["the ball", "a book", "the car"]


def three_class_rows(n: int, seed: int) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["animal", "person", "thing"])
        subject = rng.choice({"animal": ANIMALS, "person": PEOPLE, "thing": THINGS}[label])
        rows.append((f"{subject} {rng.choice(['saw', 'liked', 'found'])} {rng.choice(THINGS)}.", label))
    return rows


def write_csv(path, rows, columns=("text", "label")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return str(path)


def test_csv_with_string_labels_gets_sorted_class_names(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("A b.", "thing"), ("C d.", "animal"), ("E, f.", "person")])
    valid = write_csv(tmp_path / "v.csv", [("G h.", "person"), ("I j.", "animal")])
    source = DataSource(train_file=train, validation_file=valid)
    raw = source.load()
    assert source.label_names == ("animal", "person", "thing")
    assert raw["train"][:] == {"sentence": ["A b.", "C d.", "E, f."], "label": [2, 0, 1], "idx": [0, 1, 2]}
    assert raw["validation"]["label"] == [1, 0]
    fixed = DataSource(train_file=train, validation_file=valid, labels=("thing", "person", "animal"))
    fixed.load()
    assert fixed.label_names == ("thing", "person", "animal") and fixed.load()["train"]["label"] == [0, 2, 1]


def test_integer_labels_sort_numerically_and_name_the_classes(tmp_path):
    rows = [("a.", "10"), ("b.", "2"), ("c.", "3")]
    source = DataSource(train_file=write_csv(tmp_path / "t.csv", rows),
                        validation_file=write_csv(tmp_path / "v.csv", rows[:1]))
    assert source.load()["train"]["label"] == [2, 0, 1] and source.label_names == ("2", "3", "10")
    # integer labels with --labels names: the integers are ids into them (CoLA's 0/1 with its names)
    named = DataSource(train_file=write_csv(tmp_path / "t2.csv", [("a.", 1), ("b.", 0)]),
                       validation_file=write_csv(tmp_path / "v2.csv", [("c.", 0)]), labels=("no", "yes"))
    assert named.load()["train"]["label"] == [1, 0] and named.label_names == ("no", "yes")


def test_sentence_pairs_from_json_lines_are_tokenized_as_pairs(tmp_path, tiny_tokenizer):
    rows = [{"s1": "the cat saw him.", "s2": "a dog found the ball.", "y": 1},
            {"s1": "mary liked a book.", "s2": "john met her friend.", "y": 0}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    source = DataSource(train_file=str(path), validation_file=str(path), text_column="s1", text_pair_column="s2",
                        label_column="y")
    dm = TextClassificationDataModule(tiny_tokenizer, source=source, cache_dir=None).setup()
    assert dm.label_names == ("0", "1") and dm.pairs["validation"] == ["a dog found the ball.", "john met her friend."]
    first = dm.splits["train"][0]
    expected = tiny_tokenizer("the cat saw him.", "a dog found the ball.", truncation=True, max_length=128)
    assert first["input_ids"] == expected["input_ids"] and first["token_type_ids"] == expected["token_type_ids"]
    assert 1 in first["token_type_ids"]  # the second sentence is segment B
    assert first["label"] == 1


def test_a_save_to_disk_folder_with_class_label_names(tmp_path):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos", "mixed"])})
    saved = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a.", "b.", "c."], "label": [1, 0, 2]}, features=features),
        "dev": datasets.Dataset.from_dict({"text": ["d."], "label": [2]}, features=features)})
    saved.save_to_disk(str(tmp_path / "ds"))
    source = DataSource(dataset=str(tmp_path / "ds"), validation_split="dev")
    raw = source.load()
    assert source.label_names == ("neg", "pos", "mixed")  # the feature's order, not sorted
    assert raw["train"]["label"] == [1, 0, 2] and raw["validation"]["sentence"] == ["d."]


def test_glue_pair_task_from_the_hub_uses_its_columns_and_mnli_matched(monkeypatch):
    """The Hub itself is out of reach in tests: `load_dataset` answers with GLUE's own layout for mnli."""
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                                  "idx": datasets.Value("int32")})

    def split(n):
        return datasets.Dataset.from_dict({"premise": [f"p{i}" for i in range(n)], "hypothesis": ["h"] * n,
                                           "label": [i % 3 for i in range(n)], "idx": list(range(n))},
                                          features=features)

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append(args)
        return datasets.DatasetDict({"train": split(6), "validation_matched": split(4),
                                     "validation_mismatched": split(2)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = DataSource(task="MNLI")
    raw = source.load()
    assert calls == [("nyu-mll/glue", "mnli")]
    assert source.label_names == ("entailment", "neutral", "contradiction")
    assert raw["validation"].num_rows == 4 and raw["validation"]["sentence"] == ["p0", "p1", "p2", "p3"]
    assert raw["train"]["sentence2"] == ["h"] * 6 and source.is_pair


def test_cola_from_its_tsv_folder_is_the_seeds_data(tiny_cola):
    source = DataSource(data_dir=str(tiny_cola))
    raw = source.load()
    assert source.kind == "glue" and source.task == "cola" and source.label_names == ("unacceptable", "acceptable")
    seed = load_cola(str(tiny_cola))
    for split in ("train", "validation"):
        assert raw[split].column_names == ["sentence", "label", "idx"] and raw[split][:] == seed[split][:]


def test_a_huge_csv_field_is_read_and_a_huge_tsv_field_is_one_error(tmp_path):
    big = "word " * 40_000  # 200 000 characters: over Python's csv module limit of 131 072
    train = write_csv(tmp_path / "t.csv", [(big, "a"), ("short.", "b")])
    source = DataSource(train_file=train, validation_file=train)
    assert source.load()["train"]["sentence"][0] == big
    (tmp_path / "cola").mkdir()
    (tmp_path / "cola" / "train.tsv").write_text(f"x\t1\t\tOk.\nx\t0\t*\t{big}\n")
    with pytest.raises(DataError, match=r"train.tsv:2: cannot be read as a GLUE TSV row \(field larger than"):
        load_cola(str(tmp_path / "cola"))


@pytest.mark.parametrize("train, valid, kwargs, message", [
    ([("a.", "x"), ("b.", "y")], [("c.", "z")], {}, r"v.csv: labels that never occur in the training data: 'z' \(row 1\)"),
    ([("a.", "x"), ("b.", "y")], [("c.", "y")], {"labels": ("x", "y", "z")},
     r"t.csv: no training example of class z from --labels"),
    ([("a.", "x"), ("b.", "y")], [("c.", "w")], {"labels": ("x", "y")},
     r"v.csv: labels not in --labels \(x, y\): 'w' \(row 1\)"),
    ([("a.", "x"), ("b.", "y")], [], {}, r"v.csv: (no rows|empty file)"),
    ([("a.", "x"), ("b.", "x")], [("c.", "x")], {}, r"only one class \(x\)"),
    ([("a.", "0.5"), ("b.", "1.25")], [("c.", "0.5")], {}, r"t.csv: row 1: label '0.5' .* regression"),
    ([("a.", "x"), ("", "y")], [("c.", "x")], {}, r"t.csv: row 2: empty or missing text in column 'text'"),
    ([("a.", "x"), ("b.", "")], [("c.", "x")], {}, r"t.csv: row 2: empty or missing label"),
    ([("a.", "x"), ("b.", "y")], [("c.", "x")], {"label_column": "gold"},
     r"t.csv: no column 'gold' \(it has text, label\); pass --label-column"),
    ([("a.", "x"), ("b.", "y")], [("c.", "x")], {"text_pair_column": "second"}, r"no column 'second'"),
])
def test_hostile_files_are_one_clear_error(tmp_path, train, valid, kwargs, message):
    train_path = write_csv(tmp_path / "t.csv", train)
    valid_path = write_csv(tmp_path / "v.csv", valid) if valid else str(tmp_path / "v.csv")
    if not valid:
        (tmp_path / "v.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=message):
        DataSource(train_file=train_path, validation_file=valid_path, **kwargs).load()


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "stsb"}, "stsb is a regression task"),
    ({"task": "squad"}, "unknown --task 'squad'"),
    ({"task": "sst2", "data_dir": "x"}, "--data-dir reads CoLA's GLUE TSV files only"),
    ({"train_file": "a.csv"}, "--train-file and --validation-file go together"),
    ({"train_file": "a.csv", "validation_file": "b.csv", "task": "cola"}, "cannot be combined with --train-file"),
    ({"dataset": "x/y", "data_dir": "d"}, "cannot be combined with --dataset"),
])
def test_conflicting_or_unsupported_sources(kwargs, message):
    with pytest.raises(DataError, match=message):
        DataSource(**kwargs)


def test_the_token_cache_serves_files_and_pairs_too(tmp_path, tiny_tokenizer, monkeypatch):
    rows = [{"a": "the cat saw him.", "b": "mary met him.", "label": "x"}, {"a": "john.", "b": "a dog.", "label": "y"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def setup():
        source = DataSource(train_file=str(path), validation_file=str(path), text_column="a", text_pair_column="b")
        return TextClassificationDataModule(tiny_tokenizer, source=source, cache_dir=str(tmp_path / "cache")).setup()

    first = setup().splits["train"][:]
    calls = []
    monkeypatch.setattr(TextClassificationDataModule, "_tokenize", lambda self, batch: calls.append(1))
    assert setup().splits["train"][:] == first and calls == []  # read back, not tokenized again
    assert first["input_ids"][0] == tiny_tokenizer("the cat saw him.", "mary met him.")["input_ids"]


def test_labels_are_the_text_in_the_file(tmp_path, caplog):
    """No number round trip: 12345678901234567890 and ...891 stay two classes named as written, and `01` and `1` are
    two classes (with one warning naming them, as for `ACCEPTABLE` and ` acceptable`)."""
    rows = [("a.", "12345678901234567890"), ("b.", "12345678901234567891"), ("c.", "01"), ("d.", "1"),
            ("e.", "acceptable"), ("f.", "ACCEPTABLE"), ("g.", " acceptable")]
    path = write_csv(tmp_path / "t.csv", rows)
    source = DataSource(train_file=path, validation_file=path)
    raw = source.load()
    assert source.label_names == ("01", "1", "12345678901234567890", "12345678901234567891", " acceptable",
                                  "ACCEPTABLE", "acceptable")  # numbers by value, then text
    assert [source.label_names[i] for i in raw["train"]["label"]] == [label for _, label in rows]
    (line,) = [r.message for r in caplog.records if "separate classes" in r.message]
    assert "'01' and '1'" in line and "'acceptable' and 'ACCEPTABLE' and ' acceptable'" in line
    # --labels names them as written: 01,1 is no longer refused
    source = DataSource(train_file=path, validation_file=path, labels=("01", "1", "12345678901234567890",
                                                                       "12345678901234567891", "acceptable",
                                                                       "ACCEPTABLE", " acceptable"))
    assert source.load()["train"]["label"] == [2, 3, 0, 1, 4, 5, 6]


def test_json_lines_keep_big_numbers_and_warn_when_numbers_and_strings_mix(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a.", "label": 12345678901234567890}\n{"text": "b.", "label": 12345678901234567891}\n'
                    '{"text": "c.", "label": "one"}\n')
    source = DataSource(train_file=str(path), validation_file=str(path))
    source.load()
    assert source.label_names == ("12345678901234567890", "12345678901234567891", "one")
    (line,) = [r.message for r in caplog.records if "mixes JSON numbers and strings" in r.message]
    assert "12345678901234567890 and 'one'" in line


@pytest.mark.parametrize("content, message", [
    ('{"text": "a.", "label": "x"}\n[1, 2, 3]\n', r"t.jsonl:2: an array where a JSON object is expected"),
    ('{"text": "a.", "label": "x"}\n42\n', r"t.jsonl:2: a number where a JSON object is expected"),
    ('{"text": "a.", "label": "x"}\nnull\n', r"t.jsonl:2: null where a JSON object is expected"),
    ('{"text": "a.", "label": "x"}\n\n{"text": "b.", "label": \n', r"t.jsonl:3: not valid JSON \(Expecting value"),
    ('[{"text": "a.", "label": "x"}, {"text": "b.", "label": "y"}]\n', r"t.jsonl: not JSON lines: the file holds one"),
    ('[\n  {"text": "a.", "label": "x"}\n]\n', r"t.jsonl: not JSON lines: the file holds one JSON array"),
])
def test_a_bad_json_lines_file_is_named_by_its_line(tmp_path, content, message):
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        DataSource(train_file=str(path), validation_file=str(path)).load()


def test_a_file_with_no_line_breaks_is_refused_before_it_is_parsed(tmp_path):
    """50 MB on one line took pandas minutes and 7 GB; the line is refused after reading 1 MiB of it."""
    import resource
    import time

    path = tmp_path / "t.csv"
    with open(path, "w") as f:
        f.write("text,label\n")
        for _ in range(50):
            f.write("word " * 200_000)  # 1 MB a chunk, 50 MB, no newline
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    with pytest.raises(DataError, match=r"t.csv:2: a line of more than 1 MiB; rows longer than that are refused"):
        DataSource(train_file=str(path), validation_file=str(path)).load()
    assert time.monotonic() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing near the file's size


def test_several_missing_columns_and_unknown_labels_are_all_in_one_line(tmp_path):
    path = write_csv(tmp_path / "t.csv", [("a.", "x"), ("b.", "y")])
    with pytest.raises(DataError, match=r"no column 'premise' and no column 'gold' \(it has text, label\); pass "
                                        r"--text-column NAME and --label-column NAME"):
        DataSource(train_file=path, validation_file=path, text_column="premise", label_column="gold").load()
    valid = write_csv(tmp_path / "v.csv", [("c.", "z"), ("d.", "x"), ("e.", "w"), ("f.", "z")])
    with pytest.raises(DataError, match=r"labels that never occur in the training data: 'z' \(row 1\), 'w' \(row 3\)"):
        DataSource(train_file=path, validation_file=valid).load()


def test_a_tsv_saved_as_csv_says_so(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text\tlabel\nIt's fine, really.\tx\nA, b, c and d.\ty\n")
    with pytest.raises(DataError, match=r"cannot be read as CSV .*; it looks tab-separated: name it .tsv"):
        DataSource(train_file=str(path), validation_file=str(path)).load()
