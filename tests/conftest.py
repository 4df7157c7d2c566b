"""Shared fixtures: hermetic environment, a tiny CoLA folder, a tiny tokenizer and a tiny random BERT."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_COLA = ROOT / "data" / "cola"  # CoLA as shipped with the project
sys.path.insert(0, str(ROOT))

SUBJECTS = ["the cat", "a dog", "john", "mary", "the boy", "my sister", "the teacher", "they"]
VERBS = ["saw", "liked", "found", "kicked", "helped", "met"]
OBJECTS = ["the ball", "a book", "her friend", "the car", "him", "the house"]


def tiny_rows(n: int, seed: int) -> list[tuple[int, str]]:
    """Acceptable `S V O.` sentences and unacceptable scrambles of them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
        if rng.random() < 0.65:
            rows.append((1, " ".join(words).capitalize() + "."))
        else:
            rows.append((0, " ".join(reversed(words)).capitalize() + "."))
    return rows


def write_tsv(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for label, sentence in rows:
            f.write(f"tiny\t{label}\t{'' if label else '*'}\t{sentence}\n")


CACHE_VARS = ("HF_HOME", "HF_DATASETS_CACHE", "WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
              "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "TEXT_CLASSIFIER_CACHE", "TORCHINDUCTOR_CACHE_DIR")


def _isolate(patch, home) -> None:
    for var in CACHE_VARS:
        patch.setenv(var, str(home / var.lower()))
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("WANDB_MODE", "offline")
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow tests choose their store (a local server or SQLite)


@pytest.fixture(scope="session", autouse=True)
def hermetic_session(tmp_path_factory):
    """No network and every cache in a tmp folder, already for module- and session-scoped fixtures (which pytest sets
    up before any function-scoped one)."""
    with pytest.MonkeyPatch.context() as patch:
        _isolate(patch, tmp_path_factory.mktemp("session-home"))
        yield


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    """No network, nothing written outside tmp folders, a fresh Accelerate state per test."""
    _isolate(monkeypatch, tmp_path_factory.mktemp("home"))
    monkeypatch.delenv("COLA_DIR", raising=False)
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def tiny_cola(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cola")
    write_tsv(folder / "train.tsv", tiny_rows(48, seed=1))
    write_tsv(folder / "dev.tsv", tiny_rows(20, seed=2))
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    words = sorted({w for part in SUBJECTS + VERBS + OBJECTS for w in part.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + words
    path = tmp_path_factory.mktemp("tok") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(path), do_lower_case=True)


def tiny_bert(tokenizer, seed: int = 0, max_positions: int = 64):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=max_positions, num_labels=2,
                        id2label={0: "unacceptable", 1: "acceptable"}, label2id={"unacceptable": 0, "acceptable": 1})
    return BertForSequenceClassification(config).eval()  # eval(), as from_pretrained returns it


def save_tiny_model(folder: Path, tokenizer, seed: int = 0, max_positions: int = 64) -> Path:
    """A Hugging Face folder holding a tiny random BERT and its tokenizer, as `--model` accepts."""
    tiny_bert(tokenizer, seed=seed, max_positions=max_positions).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_tokenizer) -> Path:
    """A tiny model folder of the test's own, which it may change."""
    return save_tiny_model(tmp_path / "tiny-bert", tiny_tokenizer)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A tiny model folder shared by the tests of a module, which only read it."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), tiny_tokenizer)


def shell_env(env: dict | None = None) -> dict:
    """os.environ updated by `env`, as a shell would give a run: less the address of a W&B service that a test
    started in this process (wandb exports it as WANDB_SERVICE), which is not the run's; attached to it, a run's
    offline record could still be unwritten at exit, and stopping the run's service would stop the test's."""
    return {k: v for k, v in {**os.environ, **(env or {})}.items() if not k.startswith("WANDB_SERVICE")}


def run_script(name: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300, input: bytes = b""):
    """`python scripts/<name> args` in `cwd` with os.environ updated by `env` and `input` on stdin, as
    `subprocess.run` returns it; the process is forked from one that has already imported the libraries
    (tests/_forked.py)."""
    import _forked

    return _forked.run(str(ROOT / "scripts" / name), args, cwd=cwd, env=shell_env(env), timeout=timeout, input=input)


def assert_one_line_error(result, *fragments, code: int = 2):
    """A refusal as promised: exit `code`, no traceback, exactly one `error:` line on stderr holding `fragments`."""
    assert result.returncode == code, (result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server's URL (no database name): .ci/run's (TEST_POSTGRES_URL), else one started here
    for the session. Skipped only where PostgreSQL is not installed at all; with REQUIRE_POSTGRES set (.ci/run), a
    missing PostgreSQL fails instead."""
    import tempfile

    import pg_server

    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"]
        return
    if not pg_server.available():
        message = "needs PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql; .ci/run installs it)"
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    folder = tempfile.mkdtemp(prefix="pg-")  # not under pytest's tmp folders: the postgres user must reach it
    try:
        yield pg_server.start(folder)
    finally:
        pg_server.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_server) -> str:
    """The URL of a fresh, empty database of its own on the throwaway PostgreSQL server."""
    import pg_server

    return pg_server.new_database(postgres_server)


class MlflowServer:
    """`mlflow server` on a free loopback port, with `store` as its backend store (a SQLite file in `home`, or a
    PostgreSQL database) and a folder of `home` as its artifact store. It boots in the background: `ready()` waits."""

    def __init__(self, home: Path, store: str | None = None) -> None:
        import socket
        import subprocess

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url, self.home = f"http://127.0.0.1:{port}", home
        self.store = store or f"sqlite:///{home / 'mlflow.db'}"
        with open(home / "server.log", "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store,
                 "--default-artifact-root", str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1"],
                cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job runner: starts sooner

    def ready(self) -> str:
        import time
        import urllib.request

        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return self.url
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, \
                    (self.home / "server.log").read_text()[-3000:]
                time.sleep(0.25)

    def kill(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its uvicorn worker, in their own session
        self.proc.wait()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                    "(.ci/run installs them: apt-get install chromium chromium-driver)")


@contextlib.contextmanager
def headless_chromium(profile: Path, size: tuple[int, int] = (1400, 1000)):
    """A Selenium driver of a headless Chromium with a fresh profile folder and a window of `size`, its browser log
    kept; quit at exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def first_screen_and_width(driver, ids: list[str]) -> tuple[dict, int, int]:
    """({id: the top of that element, in CSS pixels from the page's top}, the page's scroll width, the window's inner
    width), read in the browser after the page loaded."""
    tops = {i: driver.execute_script(f"return document.getElementById({i!r}).getBoundingClientRect().top") for i in ids}
    return tops, driver.execute_script("return document.documentElement.scrollWidth"), \
        driver.execute_script("return window.innerWidth")
