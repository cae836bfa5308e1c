"""
The soak tool's command line: what a person reads (the run itself is C{tox -e coverage}).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tsecho import __version__

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def load_soak() -> ModuleType:
    """
    C{benchmarks/soak.py}, a development tool outside the package, as a module.
    """
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak = load_soak()


def test_bad_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A bad option: one line on standard error naming it, status 2, no help dump.
    """
    assert soak.main(["--bogus"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "benchmarks/soak.py: option --bogus not recognized (see --help)\n")


def test_help_names_the_program_without_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--help}: the usage line names the program and every option; no epytext.
    """
    with pytest.raises(SystemExit):
        soak.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith(
        "Usage: python benchmarks/soak.py [--duration SECONDS] [--clients N] [--seed N] [--max-rss MIB]\n"
    )
    assert "C{" not in text
    assert "  It starts" not in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--version} names tsecho's version first.
    """
    with pytest.raises(SystemExit) as exited:
        soak.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"tsecho {__version__} (Twisted ")
