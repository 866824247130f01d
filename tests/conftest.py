from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained PCB in the upstream pickled format, written once per session."""
    from pcb.checkpoint import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "PCB_demo.pt", seed=0)


@pytest.fixture
def signals_as_on_a_terminal():
    """SIGINT, SIGHUP and SIGTERM at their default disposition for the test, restored after.

    A test run started under `nohup`, or as a background job of a non-interactive shell,
    inherits SIGHUP and SIGINT ignored, and the stages rightly leave an ignored signal ignored;
    the tests of what a signal does need it delivered, as on a terminal.
    """
    import signal

    saved = {
        signo: signal.getsignal(signo) for signo in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
    }
    for signo, handler in saved.items():
        if handler is signal.SIG_IGN:
            signal.signal(
                signo, signal.SIG_DFL if signo != signal.SIGINT else signal.default_int_handler
            )
    try:
        yield
    finally:
        for signo, handler in saved.items():
            signal.signal(signo, handler)


@pytest.fixture(scope="session")
def docker_client():
    """This host's Docker engine, or the test skipped with the reason (the docker tests)."""
    from pcb.errors import PcbError
    from pcb.orchestration import docker_executor

    try:
        return docker_executor.connect(timeout=60)
    except PcbError as error:
        pytest.skip(f"no Docker engine: {error}")
