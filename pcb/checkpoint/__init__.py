"""Load PCB checkpoints in the three formats met in practice, without running anything in them.

A `.pt` file is a pickle, and unpickling the ordinary way imports and calls whatever the file
names. Here `torch.load` is never called: `archive.py` checks the file's layout (zip or legacy
stream; TorchScript archives and anything else refused), `unpickler.py` interprets the pickle
into inert records (no class is constructed, no `__setstate__` or function from the file
runs), `state.py` walks those records to named tensors, and only then is a `pcb.model.PCB`
built and filled from the storage bytes. `limits.py` bounds the memory and work a file may ask
for. So a whole pickled upstream model loads without `reid` or torchvision installed, and a
crafted file can neither run code nor exhaust the machine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ..constants import NUM_TRAIN_IDS, PCB_3_7_MD5, PCB_3_7_NAME
from ..errors import PcbError
from ..fileio import file_md5
from ..model import PCB
from .archive import Checkpoint, open_checkpoint
from .inert import TensorRef
from .limits import LIMITS, Limits, human_bytes
from .refusal import NotAModel, Refused, RefusedGlobal, Unreadable, clip
from .state import extract, materialise
from .writer import upstream_pickle_bytes, write_demo_checkpoint

__all__ = [
    "EXPECTED",
    "LIMITS",
    "Limits",
    "LoadedCheckpoint",
    "load_checkpoint",
    "upstream_pickle_bytes",
    "write_demo_checkpoint",
]

EXPECTED = (
    "a PCB checkpoint (ResNet-50 trunk as `base.*`, `local_conv`, `feat_bn2d`, "
    "`instance0..5`) such as PCB_3_7.pt: a pickled upstream model, a training checkpoint "
    "{'state_dict': ...}, or a plain state_dict"
)
# Parameters of PCB without its six classifiers (24.0 M, facts.md section 1), and what each
# class adds (six Linear(256, classes) weights and biases): the model built must fit the limit.
_TRUNK_PARAMETERS = 24_100_000
_PARAMETERS_PER_CLASS = 6 * 257


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: PCB
    format: str  # "pickled-model", "training-checkpoint" or "state-dict"
    md5: str


def _message(error: Refused) -> str:
    if isinstance(error, RefusedGlobal):
        return (
            f"refused to load class `{error}`, which a PCB checkpoint does not contain; "
            "unpickling it could run code. Use a checkpoint saved by PCB_RPP_for_reID or "
            "re-save only its state_dict."
        )
    if isinstance(error, Unreadable):
        return (
            "cannot read it as a PyTorch checkpoint, it may be truncated or not a checkpoint "
            f"({error}). Expected {EXPECTED}; download it again if it was cut short."
        )
    if isinstance(error, NotAModel):
        return f"{error}; expected {EXPECTED}"
    # Layouts, TorchScript, limits: the reason says what was refused (and any way out).
    return f"{error}; nothing in it was run"


def _strip_data_parallel(state: dict[str, TensorRef]) -> dict[str, TensorRef]:
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(clip(key, 80) for key in keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _num_classes(path: Path, state: dict[str, TensorRef], limits: Limits) -> int:
    classifier = state.get("instance0.weight")
    if classifier is None or len(classifier.size) != 2:
        return NUM_TRAIN_IDS
    classes = classifier.size[0]
    needed = 4 * (_TRUNK_PARAMETERS + _PARAMETERS_PER_CLASS * classes)
    if needed > limits.storage_bytes:
        raise PcbError(
            f"{path}: its classifier has {classes:,} classes, so the model would need "
            f"{human_bytes(needed)}, over the loader's limit of "
            f"{human_bytes(limits.storage_bytes)}; expected {EXPECTED}"
        )
    return classes


def _build_model(
    path: Path, state: dict[str, TensorRef], checkpoint: Checkpoint, limits: Limits
) -> PCB:
    model = PCB(num_classes=_num_classes(path, state, limits))
    expected = model.state_dict()
    # Checkpoints from torch < 0.4.1 have no BatchNorm step counters; nothing reads them.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys: {_summarise(missing)}")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} keys: {_summarise(unexpected)}")
        raise PcbError(f"{path}: not a PCB checkpoint, {'; '.join(details)}. Expected {EXPECTED}")
    wrong = [
        f"{k} {tuple(state[k].size)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].size) != tuple(v.shape)
    ]
    wrong += [
        f"{k} is {state[k].dtype}, not a floating type"
        for k, v in expected.items()
        if k in state and v.is_floating_point() and not state[k].dtype.is_floating_point
    ]
    if wrong:
        raise PcbError(
            f"{path}: tensor shapes do not match PCB's: {_summarise(wrong, 4)}. Expected {EXPECTED}"
        )
    flat: dict = {}
    tensors = {
        key: materialise(ref, checkpoint.read_storage, checkpoint.byteorder, flat)
        for key, ref in state.items()
    }
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def load_checkpoint(path: Path, limits: Limits = LIMITS) -> LoadedCheckpoint:
    """Read any supported checkpoint into an eval-mode PCB model."""
    path = Path(path)
    if not path.is_file():
        raise PcbError(
            f"checkpoint {path} not found; put PCB_3_7.pt there (see data/README.md) "
            "or run `invoke demo-data` for an untrained demo checkpoint"
        )
    md5 = file_md5(path)
    if path.name == PCB_3_7_NAME and md5 != PCB_3_7_MD5:
        warnings.warn(
            f"{path}: md5 {md5} differs from the published {PCB_3_7_MD5}; the download may be "
            "corrupt or a different file. Continuing.",
            stacklevel=2,
        )
    try:
        with open_checkpoint(path, limits) as checkpoint:
            state, form = extract(checkpoint.payload, limits)
            model = _build_model(path, _strip_data_parallel(dict(state)), checkpoint, limits)
    except Refused as error:
        raise PcbError(f"{path}: {_message(error)}") from None
    except OSError as error:
        raise PcbError(f"{path}: cannot read it ({error.strerror or error})") from None
    return LoadedCheckpoint(model=model, format=form, md5=md5)
