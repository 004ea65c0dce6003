"""The Lua mutant list stays in step with the scripts (so the default suite notices a script change that a
mutant no longer matches), and the runner refuses a mutant that does not apply or does not compile."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci import lua_mutants
from ci.lua_mutants import ListError, Mutant, load, mutated_text
from faultmaven.stores.redis.lua_texts import SCRIPT_FILES


def test_every_listed_mutant_applies_to_exactly_one_place() -> None:
    mutants, plugins = load(lua_mutants.DEFAULT_LIST)
    assert plugins and len({m.name for m in mutants}) == len(mutants)
    for mutant in mutants:
        assert mutated_text(mutant) != (lua_mutants.ROOT / lua_mutants.LUA_DIR / mutant.file).read_text()
        assert mutant.rule and mutant.cover.tests


def test_every_script_file_has_mutants() -> None:
    mutants, _ = load(lua_mutants.DEFAULT_LIST)
    files = {name for parts in SCRIPT_FILES.values() for name in parts}
    assert files == {m.file for m in mutants}, "a Lua file with no mutant (or a mutant of no shipped file)"


def _list(tmp_path: Path, find: str) -> Path:
    path = tmp_path / "mutants.toml"
    path.write_text(
        '[scripts."touch.lua"]\ntests = ["tests/integration/test_redis_rules.py"]\n\n'
        f'[[mutant]]\nname = "x"\nfile = "touch.lua"\nrule = "r"\nfind = {find!r}\nreplace = "--"\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("find", ["no such text", "local"], ids=["missing", "twice"])
def test_a_snippet_not_found_exactly_once_exits_2(
    tmp_path: Path, find: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lua_mutants.main(["--mutants", str(_list(tmp_path, find)), "--check"]) == 2
    assert "must be exactly once" in capsys.readouterr().err


def test_a_mutant_that_breaks_the_syntax_is_refused() -> None:
    broken = Mutant(
        "broken", "update.lua", "r", "if merge == '1' then", "if merge == '1'", lua_mutants.Cover(("tests",))
    )
    with pytest.raises(ListError, match="no longer compiles"):
        lua_mutants.check_compiles([broken])
