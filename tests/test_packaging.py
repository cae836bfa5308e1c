"""
Packaging: the wheel ships the plugin without clobbering Twisted's packages,
and C{twistd} finds the plugin once tsecho is installed.
"""

from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from serverprocess import twistd_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """
    A wheel built from this source tree.
    """
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not running from a source tree")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("tsecho-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_ships_plugin(wheel: zipfile.ZipFile) -> None:
    """
    The plugin module is in the wheel, and no C{__init__.py} of Twisted's
    own packages is: installing it must not overwrite Twisted's files.
    """
    names = set(wheel.namelist())
    assert "twisted/plugins/tsecho_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [name for name in names if name.endswith("dropin.cache")]
    assert {"tsecho/__init__.py", "tsecho/protocol.py", "tsecho/py.typed"} <= names
    assert {"tsecho/wire.py", "tsecho/client/__init__.py", "tsecho/client/__main__.py"} <= names


def test_wheel_console_script_is_the_client(wheel: zipfile.ZipFile, capsys: pytest.CaptureFixture[str]) -> None:
    """
    The wheel's C{tsecho-client} console script names a function that is
    the command: C{--version} prints C{tsecho-client VERSION} and exits 0.
    """
    (entry_points,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    module, _, function = parser["console_scripts"]["tsecho-client"].partition(":")
    command = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exited:
        command(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("tsecho-client ")


def test_plugin_module_is_tiny() -> None:
    """
    The plugin imports only L{ServiceMaker}: no reactor, nothing of tsecho's,
    so C{twistd --reactor=...} and plugin listing stay cheap and safe.
    """
    source = (ROOT / "twisted" / "plugins" / "tsecho_plugin.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from twisted.application.service import ServiceMaker"]


def test_twistd_lists_tsecho() -> None:
    """
    C{twistd --help} names the tsecho command, without plugin cache warnings.
    """
    result = subprocess.run([*twistd_command()[:-2], "--help"], capture_output=True, timeout=60, check=True)
    assert b"tsecho" in result.stdout
    assert b"Unable to write to plugin cache" not in result.stdout + result.stderr


def test_twistd_tsecho_help_lists_every_option() -> None:
    """
    C{twistd tsecho --help} lists every option of the SPEC's table with its default.
    """
    result = subprocess.run(twistd_command("--help"), capture_output=True, timeout=60, check=True)
    text = " ".join(result.stdout.decode().split())
    for option in ("--port", "--listen", "--udp", "--unix-datagram", "--one-shot", "--time-format", "--utc"):
        assert option in text
    for option, default in [
        ("--max-line", "16384"),
        ("--max-connections", "10000"),
        ("--timeout", "300"),
        ("--time-format", "ctime"),
        ("--port", "21567"),
    ]:
        assert option in text
        assert f"[default: {default}" in text
    assert "--quiet" in text
