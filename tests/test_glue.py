"""data/glue.py: CoLA's GLUE TSV files, read as the seed reads them, and every odd file named by file and line."""
import pytest

from data import DataError, load_cola, read_glue_tsv
from conftest import SHIPPED_COLA


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_reads_rows_with_quotes_and_empty_annotation(tmp_path):
    path = write(tmp_path / "t.tsv", b'gj04\t1\t\tHe said "hi".\ngj04\t0\t*\tDon\'t "him" it.\nx\t1\t \tOk.\n')
    assert read_glue_tsv(path) == {"sentence": ['He said "hi".', "Don't \"him\" it.", "Ok."], "label": [1, 0, 1],
                                   "idx": [0, 1, 2]}


def test_accepts_bom_crlf_and_a_header_line(tmp_path):
    path = write(tmp_path / "t.tsv", "\ufeffsource\tlabel\tannotation\tsentence\r\ngj04\t1\t\tA b.\r\n".encode())
    assert read_glue_tsv(path) == {"sentence": ["A b."], "label": [1], "idx": [0]}


@pytest.mark.parametrize("content, message", [
    (b"gj04\t1\t\tFine.\ngj04\t1\tOnly three\n", r"t.tsv:2: expected 4 tab-separated columns .* found 3"),
    (b"gj04\t2\t\tBad label.\n", r"t.tsv:1: label must be 0 or 1, found '2'"),
    (b"", r"t.tsv: no rows"),
    (b"gj04\t1\t\tFine.\ngj04\t1\t\tCaf\xe9.\n", r"t.tsv:2: bytes that are not UTF-8"),
    (b"gj04\t1\t\t  \n", r"t.tsv:1: empty sentence"),
    (b"gj04\t1\t\tFine.\n\n", r"t.tsv:2: empty line"),
])
def test_bad_files_name_file_line_and_problem(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_glue_tsv(write(tmp_path / "t.tsv", content))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"dev.tsv: file not found; pass --data-dir"):
        (tmp_path / "train.tsv").write_text("gj04\t1\t\tFine.\n")
        load_cola(str(tmp_path))
    with pytest.raises(DataError, match="data folder not found"):
        load_cola(str(tmp_path / "nope"))


def test_real_cola_files():
    splits = load_cola(str(SHIPPED_COLA))
    assert splits["train"].num_rows == 8551 and splits["validation"].num_rows == 1043
    assert sum(splits["train"]["label"]) == 6023 and sum(splits["validation"]["label"]) == 721  # from its README
    assert splits["validation"][0]["sentence"] == "The sailors rode the breeze clear of the rocks."
