"""Secrets in the config: ``{ env = "NAME" }`` and ``{ file = "PATH" }`` references resolved when
the file is read, and redaction of them (and of keys that look secret) wherever the config is shown."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError

_SECRET_KEY = re.compile(r"secret|token|password|passwd|key|authorization|credential|dsn", re.IGNORECASE)
#: A table of secrets by name (the segment relay's ``write_keys``: source -> write key): its
#: values are hidden, its names kept. Other tables under a secret-looking key (``key_terms``)
#: are looked into like any table.
_SECRET_TABLE = re.compile(r"(secret|token|password|passwd|key|credential)s$", re.IGNORECASE)
#: The password of a URL's user info (``scheme://user:password@host``).
_URL_PASSWORD = re.compile(r"(://[^/?#@\s:]*:)[^/?#@\s]+@")
#: Shorter values are not hunted for in texts (a ``"1"`` would blank every digit).
MIN_SECRET_CHARS = 4
#: A secret URL's path or query is hunted for alone from this length (not a bare ``/v1``).
MIN_URL_PART_CHARS = 8


def redact(value: Any, path: str, secret_paths: frozenset[str]) -> Any:
    """``value`` (found at TOML path ``path``) with what came from references (``secret_paths``)
    and every key that looks secret replaced by ``"***"``."""
    if isinstance(value, dict):
        return {k: _redact_entry(k, v, f"{path}.{k}".lstrip("."), secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def _redact_entry(key: str, value: Any, where: str, secret_paths: frozenset[str]) -> Any:
    if where in secret_paths or (_SECRET_KEY.search(key) and not isinstance(value, dict)):
        return "***"
    if isinstance(value, dict) and _SECRET_TABLE.search(key):
        return dict.fromkeys(value, "***")
    return redact(value, where, secret_paths)


def secret_values(value: Any, path: str, secret_paths: frozenset[str]) -> set[str]:
    """The strings :func:`redact` hides in ``value`` (found at TOML path ``path``): what came
    from references, what sits under keys that look secret, and the passwords of URLs."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}".lstrip(".")
            if where in secret_paths or (
                _SECRET_KEY.search(k) and (not isinstance(v, dict) or _SECRET_TABLE.search(k))
            ):
                found |= _strings(v)
            else:
                found |= secret_values(v, where, secret_paths)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found |= secret_values(v, f"{path}[{i}]", secret_paths)
    elif isinstance(value, str):
        found |= {match.group(0)[len(match.group(1)) : -1] for match in _URL_PASSWORD.finditer(value)}
    return {secret for secret in found | _url_parts(found) if len(secret) >= MIN_SECRET_CHARS}


def _url_parts(secrets: set[str]) -> set[str]:
    """The path and query of each secret URL: a destination's answer often echoes them alone."""
    parts: set[str] = set()
    for secret in secrets:
        url = urlsplit(secret)
        if url.scheme and url.netloc:
            whole = f"{url.path}?{url.query}" if url.query else url.path
            parts |= {part for part in (whole, url.path, url.query) if len(part) >= MIN_URL_PART_CHARS}
    return parts


def _strings(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {s for v in value.values() for s in _strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in _strings(v)}
    return {value} if isinstance(value, str) else set()


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` (an error message, a request shown as a sample) with each of ``secrets`` (the
    longest first, so a secret URL goes whole) and any URL's password replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", text)


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
