"""The base of every plugin's config type, and the JSON object messages are."""

from __future__ import annotations

from typing import Any

import msgspec

JSONObject = dict[str, Any]


class ComponentConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every plugin config type: unknown keys are errors, values are immutable."""
