"""Whether the Hugging Face Hub can serve a dataset or a model, asked within seconds before anything waits on it
(the libraries' own retries take minutes when the Hub is unreachable)."""
from __future__ import annotations

import os

from data.errors import DataError


class HubError(DataError):
    """A model or dataset that is neither local nor reachable on the Hugging Face Hub."""


def require_hub(repo_id: str, repo_type: str, instead: str) -> None:
    """Fail within seconds, naming `instead`, when `repo_id` (a "model" or "dataset") is needed from a Hub that
    cannot be reached. With HF_HUB_OFFLINE=1 the Hugging Face libraries read their local cache and fail fast on
    their own."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return  # also when set after huggingface_hub was imported, which reads it once
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=5)
    except RepositoryNotFoundError:
        raise HubError(f"{repo_type} {repo_id!r} is neither a local folder nor a repository on the Hugging Face "
                       f"Hub; {instead}") from None
    except Exception as exc:  # connection refused, DNS failure, time-out, proxy error
        raise HubError(f"cannot reach the Hugging Face Hub to get {repo_type} {repo_id!r} "
                       f"({type(exc).__name__}); {instead}, or set HF_HUB_OFFLINE=1 to use a cached copy") from None
