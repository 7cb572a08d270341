"""The ``gateway`` command: startup failures are one clear line and a non-zero status."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from gateway.cli import main
from tests.gatewayproc import config_text


def run_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=30)


def test_a_taken_port_fails_fast_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "g.toml"
        config.write_text(config_text(tmp_path, listen=f"127.0.0.1:{port}"))
        result = run_gateway("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"gateway: {config}: server.listen: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
    )
    assert "Traceback" not in result.stderr


def test_a_bad_config_fails_fast_naming_the_path(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[destinations.crm]\ntype = "file"\n')
    result = run_gateway("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"gateway: {config}: destinations.crm.path: Object missing required field `path`"
    missing = run_gateway("run", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2
    assert "cannot read the config file" in missing.stderr


def test_admin_commands_without_a_token_say_so(tmp_path: Path, capsys) -> None:
    config = tmp_path / "g.toml"
    config.write_text(config_text(tmp_path))
    assert main(["status", "--config", str(config)]) == 2
    assert "admin.token is not set" in capsys.readouterr().err


def test_audit_without_a_log_says_where_it_looked(tmp_path: Path, capsys) -> None:
    # "Every accepted message is accounted for" of a log that is not there passed off a wrong
    # data_dir (a relative one, from another folder) as a clean bill; so did the other readers.
    config = tmp_path / "g.toml"
    config.write_text(config_text(tmp_path))
    for command in (["audit"], ["privacy", "inventory"]):
        assert main([*command, "--config", str(config)]) == 2, command
        assert f"no log at {tmp_path / 'log.sqlite3'}" in capsys.readouterr().err


def test_a_corrupt_log_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    config = tmp_path / "g.toml"
    config.write_text(config_text(tmp_path))
    (tmp_path / "log.sqlite3").write_bytes(b"not a database" * 100)
    assert main(["audit", "--config", str(config)]) == 1
    assert capsys.readouterr().err.startswith("gateway: the log cannot be read: file is not a database")
