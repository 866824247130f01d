"""The fault suite: hostile checkpoints (tests/hostile_checkpoints.py) the loader must refuse with
one line naming the file, without running anything and within bounded memory and time.

Code-execution attacks are in test_untrusted_checkpoint.py; here are the resource attacks
(each shown to be real against torch where that is safe to run), TorchScript archives,
layouts torch.save never writes, broken files, and the same through `pcb export`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hostile_checkpoints import (
    HOSTILE,
    deep_module_chain,
    self_containing_module,
    shared_module_graph,
    torch_save,
    torchscript_with_weights,
    zip_checkpoint,
)

from pcb.checkpoint import load_checkpoint
from pcb.checkpoint.writer import _upstream_classes, upstream_pickle_bytes
from pcb.cli.main import main
from pcb.errors import PcbError
from pcb.model import PCB, init_upstream

REPO = Path(__file__).resolve().parents[1]
REFUSED = sorted(name for name, hostile in HOSTILE.items() if not hostile.attack)
RESOURCE = sorted(name for name, hostile in HOSTILE.items() if hostile.resource)
# Peak memory a refused file may cost the loader (resident set growth in a fresh process).
MEMORY_BOUND = 300 << 20


def reference_model() -> PCB:
    return init_upstream(PCB(), torch.Generator().manual_seed(7)).eval()


def assert_same_weights(got: torch.nn.Module, expected: torch.nn.Module) -> None:
    expected_state = expected.state_dict()
    for key, value in got.state_dict().items():
        assert torch.equal(value, expected_state[key]), key


def refusal(path: Path) -> str:
    with pytest.raises(PcbError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_the_suite_has_thirty_kinds_and_more() -> None:
    assert len(HOSTILE) >= 30
    assert len(RESOURCE) >= 10


@pytest.mark.parametrize("name", REFUSED)
def test_refused_with_one_line_naming_the_file(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / f"{name}.pt"
    path.write_bytes(HOSTILE[name].make(marker))
    assert HOSTILE[name].refusal in refusal(path)
    assert not marker.exists()


# --- the resource attacks are real: what torch does with them --------------------------------


def test_shared_module_graph_is_exponential_for_torch(tmp_path: Path) -> None:
    sizes = {}
    for depth in (6, 12):
        path = tmp_path / f"graph{depth}.pt"
        path.write_bytes(torch_save(shared_module_graph(depth)))
        sizes[depth] = path.stat().st_size
        module = torch.load(path, weights_only=False)
        # One Linear reached by 2^depth paths: state_dict() names its two tensors on each.
        assert len(module.state_dict()) == 2 * 2**depth
    per_level = (sizes[12] - sizes[6]) / 6
    assert per_level < 300  # bytes per level: 40 levels fit in ~11 KB, 2^40 paths
    assert len(HOSTILE["module-graph-bomb"].make(tmp_path / "m")) < 12_000


def test_self_containing_module_recurses_without_end_in_torch(tmp_path: Path) -> None:
    path = tmp_path / "self.pt"
    path.write_bytes(torch_save(self_containing_module()))
    module = torch.load(path, weights_only=False)
    with pytest.raises(RecursionError):
        module.state_dict()


def test_deep_module_chain_overflows_torchs_recursion(tmp_path: Path) -> None:
    path = tmp_path / "deep.pt"
    path.write_bytes(zip_checkpoint(deep_module_chain(10_000)))
    module = torch.load(path, weights_only=False)
    with pytest.raises(RecursionError):
        module.state_dict()


def test_a_method_replaced_by_an_attribute_is_never_called(tmp_path: Path) -> None:
    """An instance attribute named like a method (here `state_dict`, set to a class) is what
    a loader calling the module's methods would run; here it is only data in a record."""
    model = reference_model()
    model.state_dict = OrderedDict  # type: ignore[method-assign]
    path = tmp_path / "replaced.pt"
    path.write_bytes(upstream_pickle_bytes(model))
    with _upstream_classes():
        unpickled = torch.load(path, weights_only=False)
    assert unpickled.state_dict() == OrderedDict()  # torch's way calls the replacement
    loaded = load_checkpoint(path)
    assert loaded.format == "pickled-model"
    del model.state_dict
    assert_same_weights(loaded.model, model)


# --- memory and time ------------------------------------------------------------------------------

MEASURE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from pcb.checkpoint import load_checkpoint
    from pcb.errors import PcbError

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    def reset_peak():
        # Linux >= 4.0: writing 5 resets the peak resident set size (VmHWM) to the current.
        Path("/proc/self/clear_refs").write_text("5")

    try:
        load_checkpoint(Path(sys.argv[1]))  # imports and code paths, once
    except PcbError:
        pass
    results = {}
    for name in sys.argv[2:]:
        reset_peak()
        before, start = status("VmRSS"), time.perf_counter()
        try:
            load_checkpoint(Path(name))
            refused = False
        except PcbError:
            refused = True
        results[Path(name).stem] = {
            "refused": refused,
            "peak_growth": status("VmHWM") - before,
            "seconds": round(time.perf_counter() - start, 3),
        }
    print(json.dumps(results))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_resource_attacks_stay_within_memory_and_time(tmp_path: Path) -> None:
    paths = []
    for name in RESOURCE:
        path = tmp_path / f"{name}.pt"
        path.write_bytes(HOSTILE[name].make(tmp_path / "marker"))
        paths.append(str(path))
    warm = tmp_path / "warm.pt"
    warm.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(warm), *paths],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(result.stdout)
    print("\n".join(f"{name}: {row}" for name, row in measured.items()))
    assert set(measured) == set(RESOURCE)
    for name, row in measured.items():
        assert row["refused"], name
        assert row["peak_growth"] < MEMORY_BOUND, (name, row)
        assert row["seconds"] < 30, (name, row)


# --- TorchScript carrying real PCB weights ------------------------------------------------------


@pytest.fixture(scope="module")
def pcb_torchscript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torchscript") / "PCB_scripted.pt"
    path.write_bytes(torchscript_with_weights(reference_model()))
    return path


def test_torchscript_with_pcb_weights_is_refused_with_a_way_out(
    pcb_torchscript: Path, tmp_path: Path
) -> None:
    # torch.load hands it to torch.jit.load, which runs its code, and returns a module whose
    # state_dict is PCB's: a loader built on torch.load exported it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unpickled = torch.load(pcb_torchscript, weights_only=False)
    PCB().load_state_dict(unpickled.state_dict(), strict=True)

    message = refusal(pcb_torchscript)
    assert "is a TorchScript archive" in message
    assert "torch.jit.load('PCB_scripted.pt'); torch.save(m.state_dict(), 'weights.pt')" in message
    # The way out the message gives, followed in this trusted test, gives the same model.
    weights = tmp_path / "weights.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "switch to torch.export"
        torch.save(torch.jit.load(pcb_torchscript).state_dict(), weights)
    loaded = load_checkpoint(weights)
    assert loaded.format == "state-dict"
    assert_same_weights(loaded.model, reference_model())


def test_cli_export_of_torchscript_with_pcb_weights_fails(pcb_torchscript: Path, tmp_path: Path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "pcb", "export", "--checkpoint", str(pcb_torchscript)]
        + ["--run", str(run)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {pcb_torchscript}: is a TorchScript archive")
    assert not run.exists()


# --- the same through `pcb export` ----------------------------------------------------------------

CLI_CASES = [
    "storage-bomb-zip",
    "module-graph-bomb",
    "linear-constructor",
    "deep-modules-10k",
    "zip-traversal",
    "zip-wrong-layout",
    "legacy-tar",
    "legacy-truncated-data",
    "huge-classifier",
]


@pytest.mark.parametrize("name", CLI_CASES)
def test_export_refuses_and_writes_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{name}.pt"
    path.write_bytes(HOSTILE[name].make(tmp_path / "marker"))
    run = tmp_path / "run"
    assert main(["export", "--checkpoint", str(path), "--run", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and HOSTILE[name].refusal in err
    assert not run.exists()
