"""Mutation testing of the Redis store's Lua rules (faultmaven/stores/redis/lua/*.lua), which mutmut cannot reach.

    python ci/lua_mutants.py [--mutants ci/lua_mutants.toml] [--jobs 2] [--min-score 1.0] [--only TEXT]
                             [--timeout 180] [--check]

Each mutant in the list (ci/lua_mutants.toml) names a script file, an exact snippet that must occur exactly
once in it, its replacement and the rule the change breaks; the tests that cover a script are named once
per script (a mutant may name its own). The repository's faultmaven/, tests/ and pyproject.toml are copied
to a temporary folder (one copy per job); for each mutant the one file is rewritten there, the covering
tests run there (`pytest -x -q -p no:randomly -p no:cacheprovider`, PYTHONPATH=the copy, plugin auto-load
off and the list's [pytest] plugins loaded), and the file is restored. The working tree is never touched.

Before any test runs, every mutant must apply (its snippet found exactly once) and every script it changes
must still compile in a real redis-server, and the covering tests must pass on the real scripts: otherwise
the list is out of step with the scripts and nothing is judged (exit 2). A mutant is killed when its tests
fail (or run past --timeout), survives when they pass.

Exit 0 when the score (killed / mutants) reaches --min-score (default 1.0: every mutant killed), 1 when it
does not, 2 when a mutant does not apply, does not compile, or its tests could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parents[1]
LUA_DIR = Path("faultmaven/stores/redis/lua")
DEFAULT_LIST = ROOT / "ci" / "lua_mutants.toml"
PYTEST_FLAGS = ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-rfE"]
# Plugins are not auto-loaded (the installed ones cost seconds of start-up per run); these are loaded.
DEFAULT_PLUGINS = ("asyncio", "timeout")
COPIED = ("faultmaven", "tests", "pyproject.toml")
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)", re.MULTILINE)
ERROR_LINE = re.compile(r"^E +(.+)$", re.MULTILINE)  # the first line of the failure's explanation


class ListError(Exception):
    """The mutant list does not match the scripts (or is malformed): nothing can be judged."""


@dataclass(frozen=True)
class Cover:
    """The tests that cover a script: pytest paths or node ids, and a -k expression ('' for none)."""

    tests: tuple[str, ...]
    k: str = ""

    def args(self) -> list[str]:
        return [*self.tests, *(["-k", self.k] if self.k else [])]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    rule: str
    find: str
    replace: str
    cover: Cover


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, timeout (counted as killed), survived, error
    seconds: float
    detail: str = ""
    output: str = field(default="", repr=False)

    @property
    def killed(self) -> bool:
        return self.status in ("killed", "timeout")


def load(path: Path) -> tuple[list[Mutant], tuple[str, ...]]:
    """The mutants of the list, each with its cover (its own, else its script's), and the pytest plugins
    the covering tests need ([pytest] plugins)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    plugins = data.get("pytest", {}).get("plugins", list(DEFAULT_PLUGINS))
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ListError("[pytest] plugins must be a list of plugin names")
    covers = {name: _cover(spec, f"[scripts.{name!r}]") for name, spec in data.get("scripts", {}).items()}
    mutants, names = [], set()
    for i, spec in enumerate(data.get("mutant", []), 1):
        where = f"mutant #{i}"
        missing = {"name", "file", "rule", "find", "replace"} - spec.keys()
        if missing:
            raise ListError(f"{where}: missing {sorted(missing)}")
        if spec["name"] in names:
            raise ListError(f"{where}: the name {spec['name']!r} is used twice")
        names.add(spec["name"])
        if "tests" in spec:
            cover = _cover(spec, where)
        elif spec["file"] in covers:
            cover = covers[spec["file"]]
        else:
            raise ListError(f"{where} ({spec['name']}): no tests, and no [scripts.{spec['file']!r}] cover")
        mutants.append(Mutant(spec["name"], spec["file"], spec["rule"], spec["find"], spec["replace"], cover))
    if not mutants:
        raise ListError(f"{path}: no [[mutant]] entries")
    return mutants, tuple(plugins)


def _cover(spec: dict[str, object], where: str) -> Cover:
    tests, k = spec.get("tests"), spec.get("k", "")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ListError(f"{where}: `tests` must be a non-empty list of pytest paths or node ids")
    if not isinstance(k, str):
        raise ListError(f"{where}: `k` must be a string")
    return Cover(tuple(tests), k)


def mutated_text(mutant: Mutant, root: Path = ROOT) -> str:
    """The file's text with the mutant applied; ListError unless the snippet occurs exactly once."""
    path = root / LUA_DIR / mutant.file
    if not path.is_file():
        raise ListError(f"{mutant.name}: {path.relative_to(root)} does not exist")
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.find)
    if count != 1:
        raise ListError(f"{mutant.name}: its snippet occurs {count} times in {mutant.file} (must be exactly once)")
    if mutant.find == mutant.replace:
        raise ListError(f"{mutant.name}: the replacement equals the snippet")
    return text.replace(mutant.find, mutant.replace)


def check_compiles(mutants: list[Mutant]) -> None:
    """SCRIPT LOAD of every assembled script each mutant changes, in a throwaway redis-server."""
    import redis

    from faultmaven.stores.redis.lua_texts import SCRIPT_FILES
    from tests.redis_server import RedisServer

    texts = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / LUA_DIR).glob("*.lua")}
    server = RedisServer()
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        for mutant in mutants:
            changed = texts | {mutant.file: mutated_text(mutant)}
            scripts = [name for name, parts in SCRIPT_FILES.items() if mutant.file in parts]
            if not scripts:
                raise ListError(f"{mutant.name}: no script is made of {mutant.file}")
            for script in scripts:
                try:
                    client.script_load("".join(changed[part] for part in SCRIPT_FILES[script]))
                except redis.ResponseError as exc:
                    raise ListError(f"{mutant.name}: the {script} script no longer compiles: {exc}") from exc
        client.close()
    finally:
        server.cleanup()


def make_copy(into: Path) -> Path:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, into / name)
    return into


def run_pytest(copy: Path, args: list[str], timeout: float, plugins: tuple[str, ...]) -> tuple[int | None, str, float]:
    """pytest in the copy (its own process group, so a timeout ends its redis-server too); rc None on timeout."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    loaded = [arg for plugin in plugins for arg in ("-p", plugin)]
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *loaded, *PYTEST_FLAGS, *args],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    return rc, out, time.monotonic() - started


def judge(mutant: Mutant, copy: Path, timeout: float, plugins: tuple[str, ...]) -> Outcome:
    path = copy / LUA_DIR / mutant.file
    original = path.read_text(encoding="utf-8")
    path.write_text(mutated_text(mutant, copy), encoding="utf-8")
    try:
        rc, out, seconds = run_pytest(copy, mutant.cover.args(), timeout, plugins)
    finally:
        path.write_text(original, encoding="utf-8")
    if rc is None:
        return Outcome(mutant, "timeout", seconds, f"over {timeout:.0f} s", out)
    if rc == 0:
        return Outcome(mutant, "survived", seconds, "", out)
    failed = FAILED_LINE.search(out)
    if rc == 1 and failed:
        why = ERROR_LINE.search(out)
        detail = failed.group(2) + (f"\n{why.group(1)[:110]}" if why else "")
        return Outcome(mutant, "killed", seconds, detail, out)
    return Outcome(mutant, "error", seconds, f"pytest exit {rc}", out)


def baseline(mutants: list[Mutant], copy: Path, timeout: float, plugins: tuple[str, ...]) -> None:
    """Every covering test passes on the real scripts (else every mutant would look killed): one pytest run
    over the union of the covers (a superset of each: paths joined, -k expressions or-ed)."""
    tests = sorted({t for m in mutants for t in m.cover.tests})
    ks = {m.cover.k for m in mutants}
    args = tests if "" in ks else [*tests, "-k", " or ".join(f"({k})" for k in sorted(ks))]
    rc, out, seconds = run_pytest(copy, args, timeout * 3, plugins)
    if rc != 0:
        print(out[-4000:])
        raise ListError(f"the covering tests do not pass on the real scripts (pytest exit {rc})")
    print(f"baseline: the covering tests pass on the real scripts ({seconds:.1f} s)")


def report(outcomes: list[Outcome]) -> None:
    for file in sorted({o.mutant.file for o in outcomes}):
        rows = [o for o in outcomes if o.mutant.file == file]
        killed = sum(o.killed for o in rows)
        print(f"\n{file}  ({killed}/{len(rows)} killed)")
        print(f"  {'mutant':26} {'status':9} {'time':>7}  rule / killed by")
        for o in rows:
            print(f"  {o.mutant.name:26} {o.status:9} {o.seconds:6.1f}s  {o.mutant.rule}")
            for line in o.detail.splitlines():
                print(f"  {'':26} {'':9} {'':7}    {line}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=DEFAULT_LIST, help="the mutant list (TOML)")
    parser.add_argument("--jobs", type=int, default=2, choices=(1, 2), help="mutants run at once")
    parser.add_argument("--min-score", type=float, default=1.0, help="least killed/total that passes")
    parser.add_argument("--only", default="", help="run only mutants whose name or file contains this")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one mutant's tests may take")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies and compiles")
    opts = parser.parse_args(argv)
    started = time.monotonic()
    try:
        listed, plugins = load(opts.mutants)
        mutants = [m for m in listed if opts.only in m.name or opts.only in m.file]
        if not mutants:
            raise ListError(f"no mutant matches {opts.only!r}")
        for mutant in mutants:
            mutated_text(mutant)
        check_compiles(mutants)
        print(f"{len(mutants)} mutants apply and compile")
        if opts.check:
            return 0
        with tempfile.TemporaryDirectory(prefix="fm-luamut-") as tmp:
            copies: Queue[Path] = Queue()
            for job in range(opts.jobs):
                copies.put(make_copy(Path(tmp) / f"job{job}"))
            baseline(mutants, Path(tmp) / "job0", opts.timeout, plugins)
            lock = threading.Lock()

            def one(mutant: Mutant) -> Outcome:
                copy = copies.get()
                try:
                    outcome = judge(mutant, copy, opts.timeout, plugins)
                finally:
                    copies.put(copy)
                with lock:
                    print(f"  {mutant.name:26} {outcome.status:9} {outcome.seconds:6.1f}s", flush=True)
                return outcome

            with ThreadPoolExecutor(opts.jobs) as pool:
                outcomes = list(pool.map(one, mutants))
    except ListError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(outcomes)
    errors = [o for o in outcomes if o.status == "error"]
    for o in errors:
        print(f"\n--- {o.mutant.name}: its tests could not run ({o.detail}); last output:\n{o.output[-3000:]}")
    killed = sum(o.killed for o in outcomes)
    score = killed / len(outcomes)
    survived = [o.mutant.name for o in outcomes if o.status == "survived"]
    print(f"\nkilled {killed}/{len(outcomes)} (score {score:.2f}, bound {opts.min_score:.2f})", end="")
    print(f", {len(errors)} errors, in {time.monotonic() - started:.0f} s")
    if survived:
        print("survived: " + ", ".join(survived))
    if errors:
        return 2
    return 0 if score >= opts.min_score else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # faultmaven and tests/ from this checkout, for the compile check
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
