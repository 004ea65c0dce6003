"""Mutation score per source file from mutmut's results (mutants/<file>.meta), and a gate on it.

    python ci/mutation_gate.py [--markdown] [--survivors] [PATTERN=MIN_SCORE ...]

Score = killed / (mutants - equivalent). Killed: a test failed, or the mutant timed out or crashed (the
tests noticed: it never finished). Survived: every test passed, or no test reached the mutant.
Equivalent mutants (no observable behaviour changes) are the names listed under "## Equivalent" in
perf/mutation-survivors.md, each with its reason; a listed name that no longer exists is reported as
stale. Unchecked: not run yet, interrupted, or an exit mutmut does not explain; it counts against the
score.

Every file that `[tool.mutmut] only_mutate` names and that still exists is reported, then the total.
Each PATTERN=MIN_SCORE (a path or an fnmatch pattern such as faultmaven/stores/memory/*.py) gates the
files it matches taken together: below MIN_SCORE, with any mutant unchecked, or matching no results, the
gate fails (exit 1). --markdown prints the table as Markdown (for docs/testing.md); --survivors lists the
survivors not yet triaged, by function, as perf/mutation-survivors.md lists them.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

MUTANTS = Path("mutants")
SURVIVORS = Path("perf/mutation-survivors.md")
# mutmut's exit codes: a test failed (1; 3 is pytest's internal error), a timeout (SIGXCPU and the codes
# mutmut maps to it), a crash (SIGKILL at the hard CPU limit or from the OOM killer, SIGSEGV).
KILLED = {1, 3}
TIMED_OUT = {24, -24, 152, 255, 36}
CRASHED = {-9, -11}
PASSED = {0}
NO_TESTS = {5, 33}
COLUMNS = ("killed", "timeout", "survived", "no tests", "equivalent", "unchecked")


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


def mutated_patterns(pyproject: Path = Path("pyproject.toml")) -> list[str]:
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["mutmut"]
    return list(config.get("only_mutate", [])) or ["*"]


def sources(patterns: list[str]) -> list[str]:
    """Files with results that are still mutated: a results file of a module since removed or no longer
    named (left in mutants/ by an earlier run) is not reported."""
    found = (str(p.relative_to(MUTANTS))[: -len(".meta")] for p in MUTANTS.rglob("*.py.meta"))
    return sorted(s for s in found if Path(s).is_file() and any(fnmatch.fnmatch(s, p) for p in patterns))


def verdicts(source: str) -> dict[str, int | None]:
    meta = json.loads((MUTANTS / f"{source}.meta").read_text(encoding="utf-8"))
    return dict(meta["exit_code_by_key"])


def classify(name: str, code: int | None, equivalent: set[str]) -> str:
    if code in KILLED or code in CRASHED:
        return "killed"
    if code in TIMED_OUT:
        return "timeout"
    if code in PASSED or code in NO_TESTS:
        if name in equivalent:
            return "equivalent"
        return "survived" if code in PASSED else "no tests"
    return "unchecked"  # not run, interrupted, suspicious


def tally(codes: dict[str, int | None], equivalent: set[str]) -> Counter[str]:
    return Counter(classify(name, code, equivalent) for name, code in codes.items())


def score(counts: Counter[str]) -> float:
    killed = counts["killed"] + counts["timeout"]
    judged = killed + counts["survived"] + counts["no tests"] + counts["unchecked"]
    return killed / judged if judged else 0.0


def table(rows: list[tuple[str, Counter[str], str]], markdown: bool) -> list[str]:
    """One line per (label, counts, gate verdict)."""
    head = ("file", *COLUMNS, "score", "gate")
    cells = [(label, *(str(c[k]) for k in COLUMNS), f"{score(c):.1%}", verdict) for label, c, verdict in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 2) + "|---|"]
        return lines + ["| " + " | ".join(row) + " |" for row in cells]
    width = max(len(row[0]) for row in [head, *cells])
    return [f"{row[0]:{width}} " + " ".join(f"{v:>10}" for v in row[1:-1]) + f"  {row[-1]}" for row in [head, *cells]]


def untriaged(results: dict[str, dict[str, int | None]], equivalent: set[str], listed: str) -> list[str]:
    """Survivors named nowhere in perf/mutation-survivors.md, as "- `function`: mutants 1, 2"."""
    by_function: dict[str, list[int]] = defaultdict(list)
    for codes in results.values():
        for name, code in codes.items():
            if classify(name, code, equivalent) in ("survived", "no tests") and f"`{name}`" not in listed:
                function, _, number = name.rpartition("__mutmut_")
                by_function[function].append(int(number))
    return [f"- `{f}`: mutants {', '.join(map(str, sorted(n)))}" for f, n in sorted(by_function.items())]


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    try:
        gates = {pattern: float(bound) for pattern, bound in (a.split("=", 1) for a in argv if a not in flags)}
    except ValueError:
        print(__doc__, file=sys.stderr)
        return 2
    if flags - {"--markdown", "--survivors"}:
        print(__doc__, file=sys.stderr)
        return 2
    equivalent = equivalent_names()
    every = {source: verdicts(source) for source in sources(mutated_patterns())}
    results = {source: codes for source, codes in every.items() if any(c is not None for c in codes.values())}
    rows = [(source, tally(codes, equivalent), "") for source, codes in results.items()]
    rows.append(("total", sum((c for _, c, _ in rows), Counter()), ""))
    failed = []
    for pattern, bound in gates.items():
        matched = [s for s in results if fnmatch.fnmatch(s, pattern)]
        counts = sum((tally(results[s], equivalent) for s in matched), Counter())
        ok = bool(matched) and score(counts) >= bound and not counts["unchecked"]
        rows.append((f"gate {pattern}", counts, f">= {bound:.0%} {'ok' if ok else 'FAILED'}"))
        if not ok:
            failed.append(pattern if matched else f"{pattern} (no mutmut results: run `tox -e mutation` first)")
    print("\n".join(table(rows, markdown="--markdown" in flags)))
    known = {name for codes in every.values() for name in codes}
    stale = sorted(equivalent - known)
    if stale:
        print(f"{len(stale)} names under Equivalent in {SURVIVORS} match no mutant now (stale, not used)")
    if "--survivors" in flags:
        listed = SURVIVORS.read_text(encoding="utf-8") if SURVIVORS.exists() else ""
        print("\n".join(untriaged(results, equivalent, listed)))
    print("mutation_gate: " + ("FAILED: " + ", ".join(failed) if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
