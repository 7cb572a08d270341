"""The website under test: a static HTTP server on loopback, on another origin than the gateway.

``/<name>.html`` serves ``tests/browser/pages/<name>.html`` with every ``{{NAME}}`` replaced by
``server.values["NAME"]`` (the gateway URL, the write key... set by each test before it navigates).
``/npm/<path>`` serves files of the installed npm packages (``tests/clients/browser/node_modules``),
as a site serves the build of its own dependencies.
"""

from __future__ import annotations

import mimetypes
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

PAGES = Path(__file__).parent / "pages"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


class PageServer:
    def __init__(self, node_modules: Path, host: str = "127.0.0.1") -> None:
        self.node_modules = node_modules
        self.values: dict[str, str] = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                server.hits.append(path)
                body, content_type = server.resolve(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.origin = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def resolve(self, path: str) -> tuple[bytes | None, str]:
        if path.startswith("/npm/"):
            root = self.node_modules.resolve()
            file = (root / path.removeprefix("/npm/")).resolve()
            if not file.is_relative_to(root) or not file.is_file():
                return None, ""
            return file.read_bytes(), mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        name = path.lstrip("/")
        if "/" in name or not name.endswith(".html") or not (PAGES / name).is_file():
            return None, ""
        text = _PLACEHOLDER.sub(lambda m: self.values[m.group(1)], (PAGES / name).read_text())
        return text.encode(), "text/html; charset=utf-8"

    def url(self, page: str) -> str:
        return f"{self.origin}/{page}"

    def start(self) -> PageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
