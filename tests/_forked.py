"""Run one of this project's scripts the way a shell would, in a process of its own, but forked from a server that
has already imported torch, transformers and the rest: the run skips their imports (most of a tiny run's time).

Each run is still its own process (own exit code, stdout, stderr, working folder and environment), started with
the same argv and read the same way as `subprocess.run`. Tests that signal or kill a run start it with subprocess.
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile

# Imported once by the server. The Hugging Face libraries read HF_HOME and HF_HUB_OFFLINE at import, so every run
# sees the values of the test that started the server: a temporary folder and offline, as in every test.
PRELOAD = ["torch", "torch._dynamo", "torchmetrics", "transformers", "transformers.models.bert.modeling_bert",
           "datasets", "accelerate", "pandas", "sklearn.metrics", "matplotlib.figure", "seaborn", "yaml",
           "models.classifier", "trainer", "tracking", "data", "recipes.train"]

_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(script: str, args: list[str], cwd: str, env: dict, in_path: str, out_path: str, err_path: str) -> None:
    import atexit
    import runpy
    import threading
    import traceback

    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    source = os.open(in_path, os.O_RDONLY)
    os.dup2(source, 0)
    os.close(source)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # multiprocessing left sys.stdin on os.devnull
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))  # as `python script` does
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is None:
            code = 0
        elif isinstance(exit_.code, int):
            code = exit_.code
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # what the interpreter does at exit: wait for non-daemon threads, then run the atexit handlers
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(script: str, args: list[str], cwd, env: dict, timeout: float, input: bytes = b"") -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, name) for name in ("stdin", "stdout", "stderr")]
        for path, data in zip(paths, (input, b"", b"")):
            with open(path, "wb") as f:
                f.write(data)
        process = _server().Process(target=_child, args=(script, list(args), str(cwd), dict(env), *paths))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([sys.executable, script, *args], timeout)
        with open(paths[1], encoding="utf-8", errors="replace") as out, \
                open(paths[2], encoding="utf-8", errors="replace") as err:
            return subprocess.CompletedProcess([sys.executable, script, *args], process.exitcode, out.read(),
                                               err.read())
