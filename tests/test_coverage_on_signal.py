"""
The test-only C{sitecustomize} of C{tox -e coverage}
(C{tests/coverage_on_signal}): a measured process that kills itself with
SIGTERM, as C{twistd} does when stopped by it, still saves its data, and
still dies of the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import coverage

HOOK = Path(__file__).with_name("coverage_on_signal")

SCRIPT = """
import os, signal, sys
import coverage

def stop_as_twistd_does():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


measured = coverage.Coverage(data_file=sys.argv[1], include=[__file__], config_file=False)
measured.start()
stop_as_twistd_does()
"""


def run_killing_itself(tmp_path: Path, hook: bool) -> tuple[int, Path]:
    """
    Run L{SCRIPT} measured, with or without the hook on its path; return its
    exit status and its data file.
    """
    script, data = tmp_path / "kills_itself.py", tmp_path / "data"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_") and k != "PYTHONPATH"}
    if hook:
        env["PYTHONPATH"] = str(HOOK)
    done = subprocess.run([sys.executable, str(script), str(data)], env=env, timeout=60, check=False)
    return done.returncode, data


def test_saved_before_the_signal(tmp_path: Path) -> None:
    """
    With the hook, the data of the lines run before the signal are saved,
    and the process still ends killed by SIGTERM.
    """
    status, data = run_killing_itself(tmp_path, hook=True)
    assert status == -signal.SIGTERM
    measured = coverage.CoverageData(basename=str(data))
    measured.read()
    [lines] = [measured.lines(name) for name in measured.measured_files()]
    assert lines is not None
    assert {6, 7} <= set(lines)  # both lines of stop_as_twistd_does


def test_lost_without_the_hook(tmp_path: Path) -> None:
    """
    Without it, nothing is saved: why the hook exists.
    """
    status, data = run_killing_itself(tmp_path, hook=False)
    assert status == -signal.SIGTERM
    assert not data.exists()
