"""How long the ``wait_*`` helpers wait for what they wait for."""

from __future__ import annotations

#: How long a ``wait_*`` helper waits before it fails the test with what it was waiting for.
DEFAULT_WAIT_SECS = 30.0
