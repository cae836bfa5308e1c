"""
Fail if mutmut's last run left a surviving mutant that is not accepted.

Run by C{tox -e mutation} after C{mutmut run}.  A survivor is named by what
it changes, not by mutmut's number for it (which moves when the code around
it changes): the function, then the original line and the mutated one, as in

    tsecho.timestamps.Timestamper.prefix: stamp.encode("utf-8", "replace") => stamp.encode("UTF-8", "replace")

C{tests/mutation-accepted.txt} lists the accepted survivors in that form,
each under a comment saying why it is equivalent (or not worth a test).
Mutants that the run did not check (C{mutmut run "tsecho._idle*"} checks one
module) are left out, and so are accepted entries for them.

Usage: C{python tests/check_mutants.py [ACCEPTED_FILE]}; exit status 1 if a
survivor is not accepted, and each such survivor is printed, ready to be
added to the file once it is judged equivalent.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ACCEPTED = Path(__file__).with_name("mutation-accepted.txt")
SURVIVED = {"survived", "no tests", "suspicious"}
RESULT = re.compile(r"^\s+(\S+): (.+)$")


def mutmut(*args: str) -> str:
    return subprocess.run(["mutmut", *args], check=True, capture_output=True, text=True).stdout


def statuses() -> dict[str, str]:
    """
    Every mutant's status in the last run, by mutmut's name for it.
    """
    found = {}
    for line in mutmut("results", "--all", "true").splitlines():
        match = RESULT.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def describe(name: str) -> str:
    """
    The mutant C{name} as C{module.function: original => mutated}.
    """
    function = re.sub(r"__mutmut_\d+$", "", name).replace("xǁ", "").replace("ǁ", ".")
    function = re.sub(r"\.x_(\w+)$", r".\1", function)
    removed, added = [], []
    for line in mutmut("show", name).splitlines():
        if line.startswith("-") and not line.startswith("---"):
            removed.append(line[1:].strip())
        elif line.startswith("+") and not line.startswith("+++"):
            added.append(line[1:].strip())
    return f"{function}: {' / '.join(removed)} => {' / '.join(added)}"


def accepted(path: Path) -> set[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else ACCEPTED
    results = statuses()
    checked = {name: status for name, status in results.items() if status != "not checked"}
    if not checked:
        print("no mutant was checked: run `mutmut run` first", file=sys.stderr)
        return 1
    survivors = sorted(describe(name) for name, status in checked.items() if status in SURVIVED)
    new = [s for s in survivors if s not in accepted(path)]
    killed = len(checked) - len(survivors)
    print(f"{len(checked)} mutants checked: {killed} killed or timed out, {len(survivors)} survived")
    if new:
        print(f"{len(new)} survivors not in {path.name}:")
        for survivor in new:
            print(f"  {survivor}")
        return 1
    print(f"every survivor is accepted in {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
