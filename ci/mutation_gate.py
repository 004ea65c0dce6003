"""Mutation score per source file from mutmut's results (mutants/<file>.meta), and a gate on it.

    python ci/mutation_gate.py [FILE=MIN_SCORE ...]

Score = killed / (mutants - equivalent). A timeout counts as killed (the tests noticed: the mutant never
finished); a mutant no test reached counts as survived. Equivalent mutants (no observable behaviour
changes) are the names listed under "## Equivalent" in perf/mutation-survivors.md, each with its reason.
Every file with results is reported; each FILE=MIN_SCORE named fails the gate below MIN_SCORE, and also
when any of its mutants was left unchecked (an interrupted run proves nothing).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

MUTANTS = Path("mutants")
SURVIVORS = Path("perf/mutation-survivors.md")
KILLED = {1, 3, 24, 36, 152, 255, -24}  # mutmut's exit codes for killed and timed out
SURVIVED = {0, 5, 33}  # survived, or no test reached it


def equivalent_names(path: Path = SURVIVORS) -> set[str]:
    """Mutant names listed (as `- \\`name\\`: reason`) under the "## Equivalent" heading."""
    names: set[str] = set()
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.startswith("## "):
            section = line[3:].strip().lower()
        elif section.startswith("equivalent"):
            match = re.match(r"- `([^`]+)`", line)
            if match:
                names.add(match.group(1))
    return names


def tally(source: str, equivalent: set[str]) -> Counter[str]:
    """Counts of killed, survived, equivalent and unchecked mutants of one source file."""
    meta = json.loads((MUTANTS / f"{source}.meta").read_text(encoding="utf-8"))
    counts: Counter[str] = Counter()
    for name, code in meta["exit_code_by_key"].items():
        if name in equivalent and code not in KILLED:
            counts["equivalent"] += 1
        elif code in KILLED:
            counts["killed"] += 1
        elif code in SURVIVED:
            counts["survived"] += 1
        else:
            counts["unchecked"] += 1  # not run, interrupted, suspicious or crashed
    return counts


def score(counts: Counter[str]) -> float:
    judged = counts["killed"] + counts["survived"] + counts["unchecked"]
    return counts["killed"] / judged if judged else 0.0


def main(argv: list[str]) -> int:
    try:
        gates = {path: float(bound) for path, bound in (arg.split("=", 1) for arg in argv)}
    except ValueError:
        print(__doc__, file=sys.stderr)
        return 2
    equivalent = equivalent_names()
    sources = sorted(str(p.relative_to(MUTANTS))[: -len(".meta")] for p in MUTANTS.rglob("*.py.meta"))
    failed = [path for path in gates if path not in sources]
    for path in failed:
        print(f"{path}: no mutmut results (run `tox -e mutation` first)")
    print(f"{'file':44} {'killed':>7} {'survived':>9} {'equiv.':>7} {'unchecked':>10} {'score':>7}  gate")
    for source in sources:
        counts = tally(source, equivalent)
        if not counts["killed"] + counts["survived"] and source not in gates:
            continue  # a run filtered to other files
        value, bound = score(counts), gates.get(source)
        verdict = ""
        if bound is not None:
            ok = value >= bound and not counts["unchecked"]
            verdict = f">= {bound:.0%} {'ok' if ok else 'FAILED'}"
            if not ok:
                failed.append(source)
        print(
            f"{source:44} {counts['killed']:>7} {counts['survived']:>9} {counts['equivalent']:>7}"
            f" {counts['unchecked']:>10} {value:>7.1%}  {verdict}"
        )
    print("mutation_gate: " + ("FAILED: " + ", ".join(failed) if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
