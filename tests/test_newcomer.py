"""Issue 14, the container experience a newcomer meets: the image a stage runs is the one this
checkout built, the run named is the run written, the pre-flight refusals, the error texts
and the conventions of the Invoke tasks. Engine-free unless marked `docker`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pcb.errors import PcbError
from pcb.orchestration import images
from pcb.orchestration.argv import infer_call
from pcb.orchestration.docker_executor import DockerExecutor
from pcb.orchestration.settings import Settings

# ---- 2. the image you built is the image you run ---------------------------------------------


class FakeImage:
    def __init__(self, image_id: str, created: str) -> None:
        self.id, self.attrs = image_id, {"Created": created}


class FakeImages:
    """An engine's images by reference; a base that is not here is not found."""

    def __init__(self, by_reference: dict[str, FakeImage]) -> None:
        self.by_reference = by_reference

    def get(self, reference: str) -> FakeImage:
        from docker.errors import ImageNotFound

        if reference not in self.by_reference:
            raise ImageNotFound(reference)
        return self.by_reference[reference]

    def list(self, name: str = "", **_: Any) -> list[FakeImage]:
        return [i for r, i in self.by_reference.items() if r.startswith(f"{name}:")]


class FakeClient:
    def __init__(self, by_reference: dict[str, FakeImage]) -> None:
        self.images = FakeImages(by_reference)


def runtime_tag() -> str:
    """This checkout's runtime content tag from its default base, which the fake engine does
    not hold (so the base's id is its reference, as images.base_image_id says)."""
    return images.content_tag("runtime", images.image_def("runtime").default_base)


def test_a_stage_runs_this_checkouts_content_tag_not_latest():
    mine = runtime_tag()
    client = FakeClient(
        {
            "pcb-runtime:latest": FakeImage("sha256:other", "2026-12-02"),  # another checkout's
            "pcb-runtime:0123456789ab": FakeImage("sha256:other", "2026-12-02"),
            mine: FakeImage("sha256:mine", "2026-12-01"),
        }
    )
    executor = DockerExecutor(client=client)
    call = infer_call(Settings())
    assert executor.image_for(call) == mine
    assert f" {mine} infer " in executor.preview(call).command
    assert "pcb-runtime:latest" not in executor.preview(call).command


def test_a_stage_whose_image_is_not_built_here_says_how_to_build_it():
    client = FakeClient({"pcb-runtime:latest": FakeImage("sha256:other", "2026-12-02")})
    executor = DockerExecutor(client=client)
    with pytest.raises(PcbError, match=r"invoke build --image runtime"):
        executor.image_for(infer_call(Settings()))


def test_print_docker_without_a_build_shows_latest_and_says_why(capsys):
    executor = DockerExecutor(client=FakeClient({}))
    assert "pcb-runtime:latest infer" in executor.preview(infer_call(Settings())).command
    assert "not built from this checkout's sources yet" in capsys.readouterr().err


def test_full_runs_the_tags_its_build_made(monkeypatch, tmp_path: Path):
    from pcb.orchestration import builds, commands

    ran: list[str] = []

    class Built:
        def __init__(self, name: str) -> None:
            self.name, self.tag = name, f"pcb-{name}:built0000000"

    executor = DockerExecutor(client=FakeClient({}))
    monkeypatch.setattr(executor, "run", lambda call: ran.append(executor.image_for(call)))
    monkeypatch.setattr(commands, "check_hosts", lambda *a, **k: None)
    monkeypatch.setattr(builds, "build", lambda settings, names: [Built(n) for n in names])
    settings = Settings(results_dir=tmp_path / "results").for_demo()
    from pcb.orchestration.pipeline import full_pipeline

    commands.run_calls(settings, full_pipeline(settings), build=True, executor=executor)
    assert set(ran) == {"pcb-export:built0000000", "pcb-runtime:built0000000"}


# ---- 3. the run you named is the run you get ---------------------------------------------------


def test_demo_keeps_a_run_named_on_the_command_line():
    from pcb.orchestration.settings import settings_from_config

    assert settings_from_config({"run": "market"}, demo=True).run == "demo"
    assert settings_from_config({"run": "market"}, demo=True, run="dock").run == "dock"


def test_invoke_full_demo_run_writes_into_that_run(capsys):
    from invoke import Config, Context
    from test_tasks import load_tasks

    load_tasks().full(Context(Config()), demo=True, run="dock", print_docker=True)
    lines = capsys.readouterr().out.splitlines()
    assert all("/results/dock" in line for line in lines[1:])  # demo-data writes data/demo
    assert not any("/results/demo" in line for line in lines)
