"""Crafted checkpoints that run code when loaded the ordinary way must run nothing here.

Each payload (tests/hostile_checkpoints.py, `attack=True`) is first shown to work against an
unrestricted loader: `torch.load(weights_only=False)` creates its marker file. So a test passing
means the loader stopped a real attack, not a broken payload. They cover both file formats,
protocols 0 to 5, every opcode that calls or constructs (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX,
BUILD with __setstate__, EXT codes), attribute-chain globals and TorchScript.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hostile_checkpoints import HOSTILE, extension_registered, zip_with_malicious_data_pkl

from pcb.checkpoint import load_checkpoint
from pcb.cli.main import main
from pcb.errors import PcbError

REPO = Path(__file__).resolve().parents[1]
ATTACKS = sorted(name for name, hostile in HOSTILE.items() if hostile.attack)


def _unrestricted_load(path: Path) -> None:
    # What `torch.load(weights_only=False)`, i.e. plain pickle (or torch.jit.load for a
    # TorchScript archive), does with the file; what it returns is no checkpoint either way.
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(path, map_location="cpu", weights_only=False)


def test_there_are_attacks_of_every_kind() -> None:
    assert len(ATTACKS) >= 20
    assert {"inst-p0", "obj-p1", "newobj-partial", "newobj-ex-partial-p4"} <= set(ATTACKS)
    assert {"build-setstate-partial", "extension-code", "torchscript-from-file"} <= set(ATTACKS)
    assert any(name.startswith("legacy-") for name in ATTACKS)
    assert any(name.startswith("zip-") for name in ATTACKS)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_runs_unrestricted_but_not_here(name: str, tmp_path: Path) -> None:
    hostile = HOSTILE[name]
    control = tmp_path / "control-marker"
    (tmp_path / "control.pt").write_bytes(hostile.make(control))
    with extension_registered():
        _unrestricted_load(tmp_path / "control.pt")
    assert control.exists(), "the payload does not work: the test would prove nothing"

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(hostile.make(marker))
    # The extension registry holds os.system while this loader reads the file, too.
    with extension_registered(), pytest.raises(PcbError) as error:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert hostile.refusal in message
    if "refused to load class" in message:
        assert "re-save only its state_dict" in message


@pytest.mark.filterwarnings("ignore:.*differs from the published")
def test_export_of_a_crafted_checkpoint_runs_nothing_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "PCB_3_7.pt"
    path.write_bytes(zip_with_malicious_data_pkl(marker))
    run = tmp_path / "run"
    assert main(["export", "--checkpoint", str(path), "--run", str(run)]) == 1
    assert not marker.exists()
    assert "refused to load class" in capsys.readouterr().err
    assert not run.exists()  # refused before anything was written: no folder left behind


def test_cli_export_of_a_torchscript_that_writes_a_file(tmp_path: Path) -> None:
    """`python -m pcb export` itself, on the archive whose __setstate__ maps a file."""
    marker = tmp_path / "written-by-torch-from-file"
    path = tmp_path / "model.pt"
    path.write_bytes(HOSTILE["torchscript-from-file"].make(marker))
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "pcb", "export", "--checkpoint", str(path), "--run", str(run)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert f"{path}: is a TorchScript archive" in result.stderr
    assert "torch.jit.load" in result.stderr  # how to get a state_dict out of one
    assert not marker.exists()
    assert not run.exists()
