"""`selfheal serve` as a real process for the tests that talk to it over HTTP (service and web tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selfheal.service.config import TOKEN_ENV
from selfheal.service.discovery import ServiceRecord, service_file
from store import Workspace

REPO = Path(__file__).resolve().parents[1]
STARTUP_ATTEMPTS = 1200  # x 0.1 s: a loaded 2-core machine imports the platform slowly


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    record: ServiceRecord  # what the service wrote to service.json (its URL, pid)
    stderr: list[str]  # everything it printed on stderr so far


@contextmanager
def serve_process(home: Path, *args: str) -> Iterator[ServeProcess]:
    """Run ``selfheal serve --home HOME --port 0 ARGS`` until the block ends (SIGTERM, then kill after 60 s).

    The environment loses the token, workspace, LLM and pager settings of whoever runs the tests, so the
    service reads its token file and talks to no one outside.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (TOKEN_ENV, "SELFHEAL_HOME")
        and not k.startswith(("OPENAI_", "SELFHEAL_PAGER", "PAGERDUTY"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "selfheal.cli", "serve", "--home", str(home), "--port", "0", *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        yield ServeProcess(process, wait_for_record(Workspace(home), process, stderr), stderr)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def wait_for_record(workspace: Workspace, process: subprocess.Popen[str], stderr: list[str]) -> ServiceRecord:
    """The service's discovery record once it has written it; fails if the process exits first."""
    pause = threading.Event()
    for _ in range(STARTUP_ATTEMPTS):
        if process.poll() is not None:
            raise AssertionError(f"selfheal serve exited with {process.returncode}: {''.join(stderr)}")
        path = service_file(workspace)
        if path.exists():
            return ServiceRecord.model_validate_json(path.read_text())
        pause.wait(0.1)
    process.kill()
    raise AssertionError(f"selfheal serve never wrote service.json: {''.join(stderr)}")
