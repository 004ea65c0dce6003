"""The serve command's own checks: ports, workers, --version, --help, misspelled variables."""

from __future__ import annotations

import pytest

from faultmaven import __version__, cli


@pytest.mark.parametrize("argv", [["--port", "70000"], ["--port", "0"], ["--port", "http"], ["--workers", "0"]])
def test_bad_arguments_are_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2 and "faultmaven: error: argument" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"faultmaven {__version__}"


def test_help_describes_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--workers", "--log-level", "--version"):
        assert option in text
    assert "(default: 127.0.0.1)" in text and "(default: 8000)" in text


def test_a_misspelled_variable_is_named() -> None:
    env = {"SESSION_TIMOUT_MINUTES": "5", "SESSION_TIMEOUT_MINUTES": "5", "PATH": "/bin"}
    assert cli.unknown_variables(env) == ["SESSION_TIMOUT_MINUTES"]
