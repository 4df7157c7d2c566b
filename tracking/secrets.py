"""Keeps credentials out of everything a backend writes: hyperparameters are scrubbed before they are logged."""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|passw(or)?d|credential|auth|private[_-]?key)", re.I)
# A long run of letters and digits with both present, as API keys and access tokens look (hf_..., sk-..., 40 hex).
_TOKEN_VALUE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-]{32,}$")


def secret_values() -> set[str]:
    """Values of environment variables whose names say they hold a secret."""
    return {value for name, value in os.environ.items() if _SECRET_NAME.search(name) and len(value) >= 8}


def scrub(params: Any, public: tuple[str, ...] = (), _secrets: set[str] | None = None) -> Any:
    """A copy of `params` with secret-named keys, token-like strings and environment secrets redacted. `public`:
    keys whose values look like tokens by nature and are not secret (a git commit is 40 hex digits, as a W&B API key
    is, so they can only be told apart by name)."""
    secrets = secret_values() if _secrets is None else _secrets
    if isinstance(params, Mapping):
        return {k: REDACTED if _SECRET_NAME.search(str(k)) else v if k in public else scrub(v, public, secrets)
                for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return [scrub(v, public, secrets) for v in params]
    if isinstance(params, str):
        if _TOKEN_VALUE.match(params) or any(secret in params for secret in secrets):
            return REDACTED
    return params
