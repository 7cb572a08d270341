"""The operator console: the admin listener's pages under ``/console/`` (Overview, Source
Debugger, Event Delivery, Delivery Overview and Schema), issue 15.

Pages are server-rendered templates (autoescaped); what they show comes from the admin API an
operator can script (``/status``, ``/sources/<id>/events`` and ``/stream``, ``/destinations/<id>/
delivery``, dead letters, replays), which small JS modules under ``static/js`` fetch with the
session cookie and render with ``textContent``. htmx and uPlot are vendored under
``static/vendor`` (offline, no build step). Logging in and the CSRF rule are gateway.ops.auth's.
"""

from __future__ import annotations

from gateway.ops.console.views import console_blueprint

__all__ = ["console_blueprint"]
