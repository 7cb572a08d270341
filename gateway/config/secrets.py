"""Secrets in the config: ``{ env = "NAME" }`` and ``{ file = "PATH" }`` references resolved when
the file is read, and redaction of them (and of keys that look secret) wherever the config is shown."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

_SECRET_KEY = re.compile(r"secret|token|password|passwd|key|authorization|credential|dsn", re.IGNORECASE)


def redact(value: Any, path: str, secret_paths: frozenset[str]) -> Any:
    """``value`` (found at TOML path ``path``) with what came from references (``secret_paths``)
    and every key that looks secret replaced by ``"***"``."""
    if isinstance(value, dict):
        return {
            k: "***"
            if (f"{path}.{k}".lstrip(".") in secret_paths or (_SECRET_KEY.search(k) and not isinstance(v, dict)))
            else redact(v, f"{path}.{k}".lstrip("."), secret_paths)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    return value


def resolve_secrets(path: str, value: Any, where: str, found: set[str]) -> Any:
    """Replace ``{ env = "NAME" }`` and ``{ file = "PATH" }`` tables by the secret they name."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("env", "file") and isinstance(next(iter(value.values())), str):
            kind, name = next(iter(value.items()))
            found.add(where)
            if kind == "env":
                secret = os.environ.get(name)
                if secret is None:
                    raise ConfigError(path, where, f"environment variable {name} is not set")
                return secret
            try:
                return Path(name).read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ConfigError(path, where, f"cannot read the secret file: {error}") from None
        return {k: resolve_secrets(path, v, f"{where}.{k}".lstrip("."), found) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(path, v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value
