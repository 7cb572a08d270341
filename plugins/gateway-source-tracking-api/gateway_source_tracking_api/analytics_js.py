"""Install analytics.js for first-party serving: ``python -m gateway_source_tracking_api.analytics_js``.

Fetches the official ``@segment/analytics-next`` package from the npm registry (``npm pack``,
so npm's own registry config and integrity checks apply), and copies its standalone bundle and
lazy chunks (``dist/umd/*.js``) into ``<data_dir>/assets/analytics-next``, where the gateway
serves them as ``/analytics.js/v1/<writeKey>/analytics.min.js`` and ``/analytics-next/bundles/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@segment/analytics-next"
#: The version the gateway's browser tests run against (clients.md).
DEFAULT_VERSION = "1.84.3"


def install(data_dir: Path, version: str = DEFAULT_VERSION) -> Path:
    """Fetch and unpack the bundle; returns the folder it went to.

    Raises:
        RuntimeError: npm is missing or the package cannot be fetched.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed; it is needed once, to fetch analytics.js from the npm registry")
    target = data_dir / "assets" / "analytics-next"
    with tempfile.TemporaryDirectory() as work:
        result = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{version}", "--silent"], cwd=work, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE}@{version} failed: {result.stderr.strip()}")
        tarball = Path(work) / result.stdout.strip().splitlines()[-1]
        staging = Path(work) / "umd"
        staging.mkdir()
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/dist/umd/")
                if (
                    member.isfile()
                    and member.name.startswith("package/dist/umd/")
                    and name.endswith(".js")
                    and "/" not in name
                ):
                    source = archive.extractfile(member)
                    assert source is not None
                    (staging / name).write_bytes(source.read())
        if not (staging / "standalone.js").exists():
            raise RuntimeError(f"{PACKAGE}@{version} has no dist/umd/standalone.js")
        (staging / "VERSION").write_text(f"{PACKAGE}@{version}\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway_source_tracking_api.analytics_js", description=__doc__)
    parser.add_argument("--data-dir", default="var", help="the gateway's server.data_dir (default: var)")
    parser.add_argument("--version", default=DEFAULT_VERSION, help=f"{PACKAGE} version (default {DEFAULT_VERSION})")
    args = parser.parse_args(argv)
    try:
        target = install(Path(args.data_dir), args.version)
    except RuntimeError as error:
        print(f"analytics_js: {error}", file=sys.stderr)
        return 1
    print(f"installed {PACKAGE}@{args.version} into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
