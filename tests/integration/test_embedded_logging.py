"""Embedded = served: the README's embedding example under a real `uvicorn host:app` with uvicorn's
default logging, and `uvicorn faultmaven.main:app`, log as `python -m faultmaven` does: no session id in
any line, the service's records as JSON lines, the audit file written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "an-admin-token-of-32-characters!"


def readme_embedding_example() -> str:
    """The README's Python block that installs the service into a host app."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    (example,) = [b for b in blocks if "install(app" in b]
    return example


def serve_and_use(app: str, prefix: str, cwd: Path, audit: Path) -> list[str]:
    """Run `uvicorn <app>` with its default logging, create, read, delete a session and run a cleanup
    through it, stop it; every line it wrote."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {"PYTHONPATH": f"{cwd}:{ROOT}", "SESSION_AUDIT_LOG_PATH": str(audit), "SESSION_ADMIN_TOKEN": ADMIN}
    cmd = [sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}{prefix}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
            assert time.monotonic() < deadline, "uvicorn did not answer"
            time.sleep(0.05)
        sid = httpx.post(f"{base}/api/v1/sessions").json()["session_id"]
        assert httpx.get(f"{base}/api/v1/sessions/{sid}").status_code == 200
        assert httpx.delete(f"{base}/api/v1/sessions/{sid}").status_code == 204
        cleanup = httpx.post(f"{base}/api/v1/sessions/cleanup", headers={"Authorization": f"Bearer {ADMIN}"})
        assert cleanup.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert sid not in out
    return out.splitlines()


def check(lines: list[str], audit: Path) -> None:
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r.get("message") == "Session cleanup completed" for r in records), lines
    audited = [json.loads(line) for line in audit.read_text().splitlines()]
    assert audited and all("session_id" not in r for r in audited)


def test_the_readme_embedding_example_under_plain_uvicorn(tmp_path: Path) -> None:
    (tmp_path / "host.py").write_text(readme_embedding_example())
    audit = tmp_path / "audit.jsonl"
    lines = serve_and_use("host:app", "/fm", tmp_path, audit)
    check(lines, audit)
    accessed = [line for line in lines if "/fm/api/v1/sessions/{session_id} HTTP" in line]
    assert len(accessed) == 2, lines  # the GET and the DELETE: logged, their ids redacted


def test_the_ready_app_under_plain_uvicorn(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    lines = serve_and_use("faultmaven.main:app", "", tmp_path, audit)
    check(lines, audit)
