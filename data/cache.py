"""Tokenized splits kept between runs (`TokenCache`), in $TEXT_CLASSIFIER_CACHE, else
$XDG_CACHE_HOME/text-classifier-monitor, else ~/.cache/text-classifier-monitor. Deleting the folder is always safe."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

CACHE_ENV = "TEXT_CLASSIFIER_CACHE"
log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """$TEXT_CLASSIFIER_CACHE, else $XDG_CACHE_HOME/text-classifier-monitor, else ~/.cache/text-classifier-monitor."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get(CACHE_ENV) or os.path.join(base, "text-classifier-monitor")


class TokenCache:
    """Tokenized splits kept across runs, keyed by a hash of the split's content (sentences, labels, order), the
    tokenizer (its full serialised definition: vocabulary, normaliser, special tokens) and `max_length`. A changed
    file or tokenizer gives a new key, never a stale entry. The cache only saves time: a folder that cannot be read
    or written costs a warning and a fresh tokenization, never the run."""

    def __init__(self, root: str, tokenizer, max_length: int) -> None:
        self.root = os.path.join(root, "tokenized")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # less the truncation and padding that each call sets on it
            definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        else:  # a slow (Python) tokenizer: datasets' own fingerprinting hashes the object
            from datasets.fingerprint import Hasher

            definition = Hasher.hash(tokenizer)
        self.salt = json.dumps([type(tokenizer).__name__, definition, max_length])

    def path(self, content: str) -> str:
        """The entry for an untokenized split whose content hash is `content` (data.sources.fingerprint)."""
        digest = hashlib.sha256(self.salt.encode())
        digest.update(content.encode())
        return os.path.join(self.root, digest.hexdigest()[:32])

    def load(self, path: str):
        import datasets

        if not os.path.isdir(path):
            return None
        try:
            return datasets.load_from_disk(path)
        except Exception as exc:  # a damaged entry: tokenize again and replace it
            log.warning("tokenization cache: cannot read %s (%s); tokenizing again", path, type(exc).__name__)
            shutil.rmtree(path, ignore_errors=True)
            return None

    def save(self, path: str, tokenized) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            os.makedirs(self.root, exist_ok=True)
            tokenized.save_to_disk(tmp)
            os.rename(tmp, path)  # atomic; another process that got there first wins
        except OSError as exc:
            if not os.path.isdir(path):
                log.warning("tokenization cache: cannot write %s (%s); set %s to a writable folder to keep "
                            "tokenizations between runs", self.root, exc.strerror or exc, CACHE_ENV)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
