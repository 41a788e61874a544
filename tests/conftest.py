"""Suite-wide fixtures: one torch thread, and an S3-compatible server on loopback for storage tests.

The suite runs in two pytest-xdist workers (`make test`); a worker inherits COLUMNS=80, which the CLI's
consoles would keep for good at import, so it is dropped here: each CLI test sets the width it checks with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
import torch

from dcnr.cluster import free_port

os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """The tensors in tests are small: one intra-op thread is fastest and immune to a busy machine.
    (Determinism tests compare runs made under the same thread count.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start `moto.server` on a free loopback port; yields its URL; stops it afterwards."""
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "the S3 test server exited"
                assert time.monotonic() < deadline, "the S3 test server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say where the dashboard tests left their screenshots (here: with xdist, only this conftest is loaded
    in the process that reports)."""
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's own; xdist workers write under its basetemp
    if factory is None:
        return
    folder = factory.getbasetemp() / "dashboard-screenshots"
    if any(folder.glob("*.png")):
        terminalreporter.write_line(f"dashboard screenshots: {folder}")
