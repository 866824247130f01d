from __future__ import annotations

import socket
from pathlib import Path

from pcb.orchestration.spec import Roots, build_spec
from pcb.orchestration.stage import StageCall
from pcb.provenance import host_name, stamp


def test_host_name_prefers_the_executor_variable(monkeypatch):
    monkeypatch.delenv("PCB_HOST", raising=False)
    assert host_name() == socket.gethostname()
    monkeypatch.setenv("PCB_HOST", "npu-box-7")
    assert stamp()["host"] == "npu-box-7"
    assert stamp()["timestamp"].endswith("+00:00")


def test_containers_are_told_the_host_name(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("PCB_HOST", raising=False)
    call = StageCall("report", "runtime", ("--run", tmp_path / "results" / "demo"))
    spec = build_spec(call, "pcb-runtime:latest", Roots.of(tmp_path / "data", tmp_path / "results"))
    assert spec.environment["PCB_HOST"] == socket.gethostname()
    assert f"PCB_HOST={socket.gethostname()}" in spec.to_docker_run()
