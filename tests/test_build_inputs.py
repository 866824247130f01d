from __future__ import annotations

from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import build_inputs
from pcb.orchestration.build_inputs import (
    parse_build_args,
    resolve_base_image,
    resolve_ca_bundle,
    resolve_wheels,
)


class FakeImages:
    def __init__(self, pullable: bool) -> None:
        self.pullable = pullable
        self.pulled: list[str] = []

    def get(self, reference: str):
        from docker.errors import ImageNotFound

        raise ImageNotFound(reference)

    def pull(self, reference: str):
        from docker.errors import APIError

        self.pulled.append(reference)
        if not self.pullable:
            raise APIError("500 Server Error: registry unreachable")


class FakeClient:
    def __init__(self, pullable: bool) -> None:
        self.images = FakeImages(pullable)


@pytest.fixture
def offline_base(monkeypatch):
    made = []
    monkeypatch.setattr(
        build_inputs, "_offline_base", lambda client: made.append(1) or "pcb-base:x"
    )
    return made


def test_auto_uses_the_pinned_default_when_it_can_be_pulled(offline_base):
    client = FakeClient(pullable=True)
    assert resolve_base_image("auto", client, ["export", "runtime"]) is None
    assert client.images.pulled and client.images.pulled[0].startswith("python:3.11-slim")
    assert offline_base == []


def test_auto_falls_back_to_the_offline_base(offline_base, capsys):
    assert resolve_base_image("auto", FakeClient(pullable=False), ["runtime"]) == "pcb-base:x"
    assert "cannot be pulled here" in capsys.readouterr().err


def test_explicit_choices(offline_base):
    client = FakeClient(pullable=False)
    assert resolve_base_image("offline", client, ["export"]) == "pcb-base:x"
    assert resolve_base_image("debian:bookworm", client, ["export"]) == "debian:bookworm"
    assert resolve_base_image("", client, ["export"]) is None
    # Vendor images keep their own bases whatever the setting.
    assert resolve_base_image("offline", client, ["cann", "tensorrt"]) is None
    assert client.images.pulled == []


def test_wheels_from_setting_or_host_pip(tmp_path: Path):
    assert resolve_wheels(str(tmp_path), {}) == tmp_path
    assert resolve_wheels("", {"PIP_FIND_LINKS": f"https://example.invalid {tmp_path}"}) == tmp_path
    assert resolve_wheels("", {"PIP_FIND_LINKS": f"file://{tmp_path}"}) == tmp_path
    assert resolve_wheels("", {"PIP_FIND_LINKS": "https://example.invalid/whl"}) is None
    assert resolve_wheels("", {}, config_links="") is None
    assert resolve_wheels("", {}, config_links=str(tmp_path)) == tmp_path
    with pytest.raises(PcbError, match="wheels folder .* does not exist"):
        resolve_wheels(str(tmp_path / "missing"), {})


def test_ca_bundle_from_setting_or_pip_cert(tmp_path: Path):
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    assert resolve_ca_bundle(str(pem), {}) == pem
    assert resolve_ca_bundle("", {"PIP_CERT": str(pem)}) == pem
    assert resolve_ca_bundle("", {"PIP_CERT": str(tmp_path / "gone.pem")}) is None
    with pytest.raises(PcbError, match="CA bundle .* does not exist"):
        resolve_ca_bundle(str(tmp_path / "gone.pem"), {})


def test_build_args():
    assert parse_build_args(["A=1", "AIS_BENCH_FIND_LINKS=http://h/w/?x=y"]) == {
        "A": "1",
        "AIS_BENCH_FIND_LINKS": "http://h/w/?x=y",
    }
    with pytest.raises(PcbError, match="expected NAME=VALUE"):
        parse_build_args(["novalue"])


def test_find_links_from_pip_configuration(monkeypatch):
    import subprocess

    class Listing:
        stdout = "global.cert='/etc/ssl/certs/ca.crt'\nglobal.find-links='/opt/wheels'\n"

    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: Listing())
    assert build_inputs.pip_config_find_links() == "/opt/wheels"
