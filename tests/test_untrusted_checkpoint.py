"""Crafted checkpoints that run a command when unpickled the ordinary way must not run it here.

Each payload is first shown to work against an unrestricted loader (it creates its marker
file), so a test passing means the allow-list stopped a real attack, not a broken payload.
tests/test_checkpoint.py has the os.system reduce inside a state_dict and in a raw pickle;
these add the other shapes an attacker would try.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import pytest
import torch

from pcb.checkpoint import load_checkpoint
from pcb.cli import main
from pcb.errors import PcbError


class _Touch:
    """Unpickles into `os.system('touch <marker>')`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _eval_global(marker: Path) -> bytes:
    # Protocol 0 by hand: GLOBAL builtins.eval, MARK, a string, TUPLE, REDUCE, STOP.
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return b"cbuiltins\neval\n(V" + code.encode() + b"\ntR."


def _exec_stack_global(marker: Path) -> bytes:
    # Protocol 4 STACK_GLOBAL (no module name in a GLOBAL line) to builtins.exec.
    code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    return (
        b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94"
        + b"\x8c"
        + bytes([len(code)])
        + code.encode()
        + b"\x94\x85\x94R\x94."
    )


def _python2_builtin(marker: Path) -> bytes:
    # The Python 2 name of the builtins module, which the loader maps to `builtins`.
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return b"c__builtin__\neval\n(V" + code.encode() + b"\ntR."


def _nested_in_training_checkpoint(marker: Path) -> bytes:
    # Deep inside what looks like a real training checkpoint: OrderedDict, tensors, a list.
    state = OrderedDict(
        [("base.conv1.weight", torch.zeros(2, 3)), ("extra", [1, {"deep": _Touch(marker)}])]
    )
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "epoch": 60}, buffer)
    return buffer.getvalue()


def _zip_with_malicious_data_pkl(marker: Path) -> bytes:
    # A genuine zip-format .pt whose data.pkl is swapped for the attack.
    buffer = io.BytesIO()
    torch.save(OrderedDict([("base.conv1.weight", torch.zeros(2, 3))]), buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps(OrderedDict([("x", _Touch(marker))]), protocol=2)
            target.writestr(info, data)
    return out.getvalue()


def _subprocess_call(marker: Path) -> bytes:
    # The subprocess module instead of os.
    import subprocess

    class Call:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(marker)],))

    return pickle.dumps(Call(), protocol=4)


def _getattr_gadget(marker: Path) -> bytes:
    # getattr(__import__('os'), 'system')('touch ...'): only innocuous-looking builtins named.
    return (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vtouch "
        + str(marker).encode()
        + b"\ntR."
    )


PAYLOADS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "global-builtins-eval": (_eval_global, "builtins.eval"),
    "stack-global-exec": (_exec_stack_global, "builtins.exec"),
    "python2-builtin-eval": (_python2_builtin, "builtins.eval"),
    "nested-in-state-dict": (_nested_in_training_checkpoint, "system"),
    "zip-with-malicious-data-pkl": (_zip_with_malicious_data_pkl, "system"),
    "subprocess-call": (_subprocess_call, "subprocess.call"),
    "getattr-gadget": (_getattr_gadget, "builtins.getattr"),
}


def _unrestricted_load(path: Path) -> None:
    # What `torch.load(weights_only=False)`, i.e. plain pickle, would do with the file.
    # The payload ran or not; what it returns is no checkpoint either way.
    with contextlib.suppress(Exception):
        torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_runs_unrestricted_but_not_here(name: str, tmp_path: Path) -> None:
    make, refused = PAYLOADS[name]
    control = tmp_path / "control-marker"
    (tmp_path / "control.pt").write_bytes(make(control))
    _unrestricted_load(tmp_path / "control.pt")
    assert control.exists(), "the payload does not work: the test would prove nothing"

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(make(marker))
    with pytest.raises(PcbError) as error:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(error.value)
    assert str(path) in message and "refused to load class" in message
    assert refused in message.replace("posix.system", "os.system")
    assert "re-save only its state_dict" in message


@pytest.mark.filterwarnings("ignore:.*differs from the published")
def test_export_of_a_crafted_checkpoint_runs_nothing_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "PCB_3_7.pt"
    path.write_bytes(_zip_with_malicious_data_pkl(marker))
    run = tmp_path / "run"
    assert main(["export", "--checkpoint", str(path), "--run", str(run)]) == 1
    assert not marker.exists()
    assert "refused to load class" in capsys.readouterr().err
    assert not run.exists()  # refused before anything was written: no folder left behind
