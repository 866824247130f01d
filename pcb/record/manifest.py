"""The run manifest, `<run>/manifest.json`: what each stage read, how it was asked, what it wrote.

A benchmark figure is only as good as the stage that made it, so every stage run through the
command line is recorded here (pcb/cli/main.py runs them all through `run_recorded`, one
place):

- inputs, each with a content fingerprint (pcb.record.fingerprint): the checkpoint, the model, the
  dataset's two splits image by image, the bins, the dumps;
- the options, the host, the pcb and library versions and the image (when in a container);
- per stage: status (running, complete, failed), start and end time, the error of a failed
  run, and a content fingerprint of every output.

Fingerprints are by content (BLAKE3/128), read from the run's digest cache (pcb.record.digest)
so that an unchanged 19,000-file folder costs one stat per file, not 11 GB of reading.

A stage is skipped only when its last run is recorded complete, with the same inputs and
options, and every output still matches its fingerprint; --force runs it again. The report
takes figures only from files that a complete stage wrote and that are unchanged since, from
stages whose inputs, and the stages that made those inputs, are unchanged too (ManifestView).
A stage killed outright stays "running": the lock file says nobody runs it any more, and
the next run of the stage resumes it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..fileio import atomic_write_json, disk_full_message, is_disk_full, read_json
from ..layout import RunLayout
from ..provenance import host_name, utc_now
from .digest import CACHE_DIR, digest_store, save_stores
from .fingerprint import (
    BOOKKEEPING,
    MANIFEST_NAME,
    FileChange,
    dataset_fingerprint,
    fingerprint,
    is_temp_name,
    prune_listings,
    same_fingerprint,
    tree_changes,
    tree_fingerprint,
)
from .folder_locks import folder_lock
from .runlock import RunLock

SCHEMA = 1
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"
# Where stage records live: files directly in these folders of a run (not the per-image
# bins and dumps, which are fingerprinted as trees). Used to see what a stage changed.
RECORD_FOLDERS = (".", "model", "model/om", "bins", "eval", "perf")
# Library versions worth recording; read from installed metadata, nothing is imported.
VERSIONS = ("numpy", "pillow", "onnxruntime", "onnx", "torch", "tensorrt", "ais_bench")
IMAGE_ENV = ("PCB_IMAGE", "PCB_IMAGE_ID")

__all__ = [
    "BOOKKEEPING",
    "MANIFEST_NAME",
    "dataset_fingerprint",
    "fingerprint",
    "is_temp_name",
    "same_fingerprint",
    "tree_fingerprint",
]


def same_input(recorded: Any, current: Mapping[str, Any]) -> bool:
    if not isinstance(recorded, Mapping):
        return False
    fp = recorded.get("fingerprint")
    now = current.get("fingerprint")
    if not isinstance(fp, Mapping) or not isinstance(now, Mapping):
        return False
    if now.get("kind") == "dataset":
        return fp.get("kind") == "dataset" and all(
            same_fingerprint(fp.get(split), now[split]) for split in ("query", "gallery")
        )
    if now.get("kind") == "missing":
        # An optional input (bins/<split>.skipped.json) absent then and now.
        return fp.get("kind") == "missing"
    # An input that is invalid or unreadable now cannot vouch for anything.
    return now.get("kind") in ("file", "tree") and same_fingerprint(fp, now)


# ---------------------------------------------------------------- the plan of one stage run


@dataclass(frozen=True)
class StagePlan:
    """What the wrapper needs to know of one stage call (pcb/record/stage_plans.py builds these).

    `outputs` are run-relative paths the stage writes (files or folders); whatever record
    file the stage changes besides is added when it completes. `reset` is removed before a
    forced run (per-image output sets, which a plain rerun would resume instead). `amends`
    are other stages' outputs this one rewrites in place (parity adds its figures to an
    evaluation record): their owners' fingerprints follow, since their content is kept.
    `skippable` is False where outputs depend on hardware the plan cannot see; those stages
    are recorded but always run (they keep their own caches: engines, .om models).
    """

    key: str
    stage: str
    inputs: Mapping[str, Path] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    skippable: bool = True
    reset: tuple[str, ...] = ()
    amends: tuple[str, ...] = ()
    # False for the report: a run folder copied without a manifest must stay one, or the
    # report would hide every figure of it the next time.
    creates_manifest: bool = True


# ---------------------------------------------------------------- reading and writing


BAD_SUFFIX = ".bad"


def _manifest_problem(manifest: Any) -> str | None:
    """What makes parsed JSON something other than a manifest this pcb can use; None if
    nothing. Only what the code indexes directly is required; odd stage entries are read as
    'not run' where they are used."""
    if not isinstance(manifest, dict):
        return f"holds a JSON {type(manifest).__name__}, not a pcb run manifest"
    schema = manifest.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int):
        return f"has no schema number (found {schema!r}): it is not a pcb run manifest"
    if schema > SCHEMA:
        return (
            f"was written by a newer pcb (manifest schema {schema}; this pcb reads schema "
            f"{SCHEMA} only)"
        )
    if schema < 1:
        return f"has schema {schema}, which no pcb ever wrote"
    for key in ("stages", "inputs"):
        if not isinstance(manifest.get(key), dict):
            return f"has no `{key}` object: it is not a pcb run manifest, or was edited"
    return None


def read_manifest(root: Path, set_aside: bool = False) -> dict[str, Any] | None:
    """The manifest of a run folder, None when it has none.

    One that cannot be used (empty or cut short by a power cut, edited into another shape,
    written by a newer pcb) raises a PcbError saying so and how to go on; with `set_aside`
    (a stage run, holding the folder's lock) it is renamed to manifest.json.bad instead,
    said so on stderr, and None is returned: every stage then runs again, and the stages
    that resume (preprocess, infer) keep the files already whole.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
        problem = _manifest_problem(manifest)
    except (OSError, UnicodeDecodeError) as error:
        problem = f"cannot be read ({error})"
    except ValueError as error:
        # Empty or truncated: what a power cut leaves of a file written without fsync.
        problem = f"is not whole JSON ({error}): cut short, or edited by hand"
    if problem is None:
        return manifest
    bad = path.with_name(MANIFEST_NAME + BAD_SUFFIX)
    if not set_aside:
        raise PcbError(
            f"{path} {problem}: the stages of this run cannot be checked. Run any stage "
            f"into this folder: it keeps the file aside as {bad.name} and the stages run "
            "again (preprocessing and inference resume from the files already whole); "
            "or delete it"
        )
    os.replace(path, bad)
    print(
        f"warning: {path} {problem}; kept aside as {bad} (it replaces any older one). The "
        "stages of this run are treated as not run: each runs again when asked, "
        "preprocessing and inference keeping the files already whole",
        file=sys.stderr,
    )
    return None


def new_manifest(root: Path) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "run": str(root),
        "created": utc_now(),
        "updated": utc_now(),
        "inputs": {},
        "stages": {},
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    # Where the run was last used: a folder is often copied or mounted elsewhere.
    manifest["run"] = str(root)
    manifest["updated"] = utc_now()
    atomic_write_json(Path(root) / MANIFEST_NAME, manifest)


def environment() -> dict[str, Any]:
    """Where a stage ran: host, Python, pcb and library versions, the image when in one."""
    versions: dict[str, str] = {}
    for name in ("pcb-bench", *VERSIONS):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env = {
        "host": host_name(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": versions,
    }
    image = {key.lower(): os.environ[key] for key in IMAGE_ENV if os.environ.get(key)}
    if image:
        env["image"] = image
    return env


# ---------------------------------------------------------------- outputs


def _record_files(root: Path) -> dict[str, tuple[int, int, int]]:
    """run-relative path -> (size, mtime, inode) of the record files a stage may change."""
    found: dict[str, tuple[int, int, int]] = {}
    folders = [root / name for name in RECORD_FOLDERS]
    dumps = root / "dumps"
    if dumps.is_dir():
        folders += sorted(p for p in dumps.iterdir() if p.is_dir())
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name in BOOKKEEPING or is_temp_name(entry.name):
                    continue
                if entry.is_file(follow_symlinks=False):
                    stat = entry.stat()
                    key = Path(entry.path).relative_to(root).as_posix()
                    found[key] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return found


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _claims(output: str, path: str) -> bool:
    return path == output or path.startswith(output.rstrip("/") + "/")


def _fingerprint_outputs(root: Path, names: Sequence[str]) -> dict[str, Any]:
    # Outputs that do not exist (a static model not asked for) are not recorded.
    outputs = {}
    for name in sorted(set(names)):
        fp = fingerprint(root / name, root, keep=True)
        if fp["kind"] != "missing":
            outputs[name] = fp
    return outputs


def outputs_verify(root: Path, entry: Mapping[str, Any]) -> list[str]:
    """The outputs of a recorded stage that changed or vanished since; [] when all verify."""
    outputs = entry.get("outputs")
    if not isinstance(outputs, Mapping):
        return ["(no outputs recorded)"]
    return [
        name
        for name, fp in outputs.items()
        if not same_fingerprint(fp, fingerprint(root / name, root))
    ]


def remove_stale_temps(root: Path) -> list[Path]:
    """Temporary files a killed stage left anywhere in the run folder.

    Called with the run's lock held: nobody else writes here, so every temporary file is
    an orphan. Removing them leaves the folder with exactly the files a run that was never
    interrupted would have written.
    """
    removed = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if is_temp_name(name):
                path = Path(directory) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


# ---------------------------------------------------------------- the wrapper


@dataclass
class Decision:
    skip: bool
    reason: str


def decide(
    plan: StagePlan,
    previous: Mapping[str, Any] | None,
    inputs: Mapping[str, Any],
    root: Path,
) -> Decision:
    """Whether the stage's last recorded run still stands; the reason, for the user."""
    if not plan.skippable:
        return Decision(False, "runs every time (not skippable)")
    if not isinstance(previous, Mapping):
        return Decision(False, "not run before in this folder")
    status = previous.get("status")
    if status != COMPLETE:
        return Decision(False, f"its last run is recorded {status}")
    if previous.get("options") != _jsonable(plan.options):
        return Decision(False, "options changed")
    recorded = previous.get("inputs") or {}
    changed = [name for name in inputs if not same_input(recorded.get(name), inputs[name])]
    if changed or set(recorded) != set(inputs):
        return Decision(False, f"inputs changed: {', '.join(changed or sorted(recorded))}")
    stale = outputs_verify(root, previous)
    if stale:
        return Decision(False, f"outputs changed since: {', '.join(stale[:3])}")
    return Decision(True, f"complete since {previous.get('finished')}")


def _jsonable(value: Any) -> Any:
    """Options as JSON would give them back (tuples as lists, paths as strings)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _describe_inputs(plan: StagePlan, root: Path) -> dict[str, Any]:
    described = {}
    for name, path in plan.inputs.items():
        path = Path(path)
        # The dataset by its two splits only; any other input by its own file or tree.
        if name == "dataset":
            fp = dataset_fingerprint(path, root, keep=True)
        else:
            fp = fingerprint(path, root, keep=True)
        described[name] = {"path": str(path), "fingerprint": fp}
        if _inside(path, root):
            # Found again where the run is now: a container and the host mount it apart.
            described[name]["relative"] = path.resolve().relative_to(root.resolve()).as_posix()
    return described


def _error_text(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, SystemExit):
        return f"exited with status {error.code}"
    text = str(error).strip() or type(error).__name__
    return text if isinstance(error, PcbError) else f"{type(error).__name__}: {text}"


def _only_bookkeeping(root: Path) -> bool:
    try:
        return all(entry.name in BOOKKEEPING for entry in os.scandir(root))
    except OSError:
        return False


def _save_failure(root: Path, manifest: dict[str, Any]) -> None:
    try:
        try:
            write_manifest(root, manifest)
        except PcbError as error:
            if not is_disk_full(error.__context__ or error):
                raise
            # A full disk: the digest cache only spares reading files again, the record
            # of the failure is worth more; drop the cache to make room and try again.
            shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
            write_manifest(root, manifest)
    except (OSError, PcbError) as error:
        # The stage's own error matters more; the entry stays "running", which the next run
        # and the report read as "not complete" all the same.
        print(f"warning: could not update {root / MANIFEST_NAME}: {error}", file=sys.stderr)


@dataclass
class StageRun:
    """What `run_recorded` did: skipped or ran, why, and the stage's manifest entry."""

    plan: StagePlan
    layout: RunLayout
    skip: bool
    reason: str
    entry: dict[str, Any] = field(default_factory=dict)


def run_recorded(
    plan: StagePlan,
    layout: RunLayout,
    body: Callable[[], None],
    force: bool = False,
    command: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> StageRun:
    """Run `body` (the stage) under the run folder's lock, recorded in its manifest.

    Skipped when `decide` says its last run stands, unless `force`. Any exception marks
    the stage failed (a full disk becomes a PcbError naming the folder) and is re-raised;
    a run folder this call created and nothing but bookkeeping went into is removed again,
    so an input refused at once leaves nothing behind.
    """
    root = layout.root
    created = not root.exists()
    # Refused (another process holds the folder): touch nothing, the folder is theirs.
    lock = RunLock(root, plan.key)
    lock.acquire()
    try:
        return _run_locked(plan, layout, body, force, command, echo, created)
    finally:
        lock.release()


def _run_locked(
    plan: StagePlan,
    layout: RunLayout,
    body: Callable[[], None],
    force: bool,
    command: Sequence[str],
    echo: Callable[[str], None],
    created: bool,
) -> StageRun:
    root = layout.root
    remove_stale_temps(root)
    # A damaged manifest is set aside by a stage, which rewrites it; the report refuses.
    existing = read_manifest(root, set_aside=plan.creates_manifest)
    if existing is None and not plan.creates_manifest:
        body()
        return StageRun(plan, layout, False, "not recorded: the run has no manifest")
    manifest = existing or new_manifest(root)
    inputs = _describe_inputs(plan, root)
    previous = manifest["stages"].get(plan.key)
    decision = decide(plan, previous, inputs, root)
    save_stores()
    if decision.skip and not force:
        echo(
            f"{plan.key}: skipped, {decision.reason} with the same inputs and options, and its "
            f"outputs verify ({MANIFEST_NAME}); --force runs it again"
        )
        return StageRun(plan, layout, True, decision.reason, dict(previous or {}))
    if isinstance(previous, Mapping) and previous.get("status") == RUNNING:
        echo(
            f"{plan.key}: its run started {previous.get('started')} was interrupted; "
            "continuing where it stopped"
        )
    if force:
        for name in plan.reset:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    before = _record_files(root)
    entry: dict[str, Any] = {
        "stage": plan.stage,
        "status": RUNNING,
        "started": utc_now(),
        "finished": None,
        "forced": force,
        "reason": "forced" if force else decision.reason,
        "inputs": inputs,
        "options": _jsonable(plan.options),
        "command": list(command),
        "pid": os.getpid(),
        "environment": environment(),
        # What this run will (re)write, so that a report made while it runs, or after it
        # failed, knows which figures it no longer vouches for.
        "planned_outputs": sorted({*plan.outputs, *((previous or {}).get("outputs") or {})}),
        "outputs": {},
    }
    manifest["stages"][plan.key] = entry
    for name, described in inputs.items():
        # The run's inputs from outside it (checkpoint, dataset), as last used; the
        # stages' own entries hold the rest.
        if not _inside(Path(described["path"]), root):
            manifest["inputs"][name] = described
    start = time.monotonic()
    try:
        write_manifest(root, manifest)
        body()
    except BaseException as error:
        entry.update(
            status=FAILED,
            finished=utc_now(),
            wall_s=round(time.monotonic() - start, 3),
            error=_error_text(error),
        )
        if created and _only_bookkeeping(root):
            # Refused before writing anything: leave no folder behind.
            shutil.rmtree(root, ignore_errors=True)
        else:
            # The failure first: on a full disk the cache (an optimisation) must not take
            # the room the record of what happened needs.
            _save_failure(root, manifest)
            save_stores()
        if is_disk_full(error):
            raise PcbError(disk_full_message(root)) from error
        raise
    changed = [
        name for name, identity in _record_files(root).items() if before.get(name) != identity
    ]
    declared = [name for name in plan.outputs if (root / name).exists()]
    # A record inside a declared folder is covered by that folder's fingerprint.
    changed = [name for name in changed if not any(_claims(d, name) for d in declared)]
    kept = [
        name
        for name in (previous or {}).get("outputs", {}) or {}
        if name not in declared and (root / name).exists()
    ]
    entry.update(
        status=COMPLETE,
        finished=utc_now(),
        wall_s=round(time.monotonic() - start, 3),
        outputs=_fingerprint_outputs(root, [*declared, *changed, *kept]),
    )
    _hand_over(manifest, plan, entry)
    save_stores()
    try:
        write_manifest(root, manifest)
    except (OSError, PcbError) as error:
        # The outputs are complete; only the record of it is missing, which costs a rerun.
        raise PcbError(
            f"{plan.key} finished but {root / MANIFEST_NAME} could not be updated ({error}); "
            "its outputs are complete, run the same command again to record them"
        ) from None
    prune_listings(root, manifest)
    return StageRun(plan, layout, False, decision.reason, entry)


def _hand_over(manifest: dict[str, Any], plan: StagePlan, entry: Mapping[str, Any]) -> None:
    """Outputs this stage amended in place keep vouching for their first stage's run."""
    for key, other in manifest["stages"].items():
        if key == plan.key or not isinstance(other, dict) or other.get("status") != COMPLETE:
            continue
        outputs = other.get("outputs") or {}
        for name in plan.amends:
            if name in outputs and name in entry["outputs"]:
                outputs[name] = entry["outputs"][name]


# ---------------------------------------------------------------- what the report trusts

# How many changed files a note names before giving the count of the rest.
NAMED = 3


@dataclass
class ManifestView:
    """A run's manifest as the report reads it: which record files a complete stage vouches
    for. A run without a manifest (an older pcb, or copied without it) vouches for nothing
    and hides nothing; the report says so.

    A record is vouched for when the stage that wrote it is complete, the record and every
    other output of that stage still have their recorded content, every input the stage
    read is unchanged since, and the same holds for the stages that made those inputs (the
    evaluation's dumps, their bins, the dataset images, the model, the checkpoint).
    """

    root: Path
    manifest: dict[str, Any] | None
    # What could not be re-checked, by input name: an input from outside the run that is
    # not on this host (a run folder copied from another), or a fingerprint of an older pcb.
    unchecked: dict[str, str] = field(default_factory=dict)
    _stages: dict[str, str | None] = field(default_factory=dict, repr=False)
    _fingerprints: dict[tuple[Path, bool], dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: Path) -> ManifestView:
        return cls(Path(root), read_manifest(root))

    @property
    def present(self) -> bool:
        return self.manifest is not None

    def owners(self, relative: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.manifest is None:
            return
        for key, entry in self.manifest["stages"].items():
            if not isinstance(entry, dict):
                continue
            # A run that did not complete claims what it meant to write as well.
            names = list(entry.get("outputs") or {})
            if entry.get("status") != COMPLETE:
                names += _planned(entry)
            if any(_claims(name, relative) for name in names):
                yield key, entry

    def problem(self, path: Path) -> str | None:
        """None when the figures in `path` still stand (see the class); else why not."""
        if self.manifest is None:
            return None
        relative = Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        owners = list(self.owners(relative))
        if not owners:
            return f"{relative}: no stage in {MANIFEST_NAME} recorded writing it"
        for key, entry in owners:
            status = entry.get("status")
            if status != COMPLETE:
                error = entry.get("error")
                detail = f" ({error})" if error else ""
                return f"{relative}: stage {key} is recorded {status}{detail}"
        for key, entry in owners:
            for name, fp in (entry.get("outputs") or {}).items():
                if name == relative and self._differs(Path(path), fp, name):
                    return f"{relative}: changed since stage {key} wrote it"
        for key, _entry in owners:
            why = self.stage_problem(key)
            if why:
                return f"{relative}: {why}"
        return None

    def stage_problem(self, key: str, _seen: frozenset[str] = frozenset()) -> str | None:
        """None when stage `key`'s outputs still stand; else the first reason they do not,
        found along the stages that made its inputs."""
        if key not in self._stages:
            self._stages[key] = self._stage_problem(key, _seen | {key})
        return self._stages[key]

    def _stage_problem(self, key: str, seen: frozenset[str]) -> str | None:
        assert self.manifest is not None
        entry = self.manifest["stages"].get(key)
        if not isinstance(entry, Mapping):
            return f"stage {key} is not in {MANIFEST_NAME}"
        status = entry.get("status")
        if status != COMPLETE:
            error = entry.get("error")
            return f"stage {key} is recorded {status}" + (f" ({error})" if error else "")
        for name, fp in (entry.get("outputs") or {}).items():
            if self._differs(self.root / name, fp, name):
                return f"{name} changed since stage {key} wrote it{self._detail(name, fp)}"
        for name, described in (entry.get("inputs") or {}).items():
            why = self._input_problem(key, name, described, seen)
            if why:
                return why
        return None

    def _input_problem(
        self, key: str, name: str, described: Any, seen: frozenset[str]
    ) -> str | None:
        if not isinstance(described, Mapping):
            return None
        relative = described.get("relative")
        path = self.root / relative if relative else Path(str(described.get("path")))
        inside = bool(relative) or _inside(path, self.root)
        recorded = described.get("fingerprint") or {}
        if not inside and not path.exists() and recorded.get("kind") not in ("missing", "invalid"):
            self.unchecked[name] = f"{path} is not on this host"
            return None
        if recorded.get("kind") in ("file", "tree") and "content" not in recorded:
            self.unchecked[name] = f"{path} was recorded by an older pcb, not by content"
            return None
        current = self._fingerprint(path, dataset=recorded.get("kind") == "dataset")
        shown = relative or str(path)
        if not same_input(described, {"fingerprint": current}):
            detail = self._detail(shown, recorded, path)
            where = "" if shown == name else f" ({shown})"
            return f"its input {name}{where} changed since stage {key} read it{detail}"
        if inside:
            run_relative = relative or path.resolve().relative_to(self.root.resolve()).as_posix()
            for owner, _entry in self.owners(run_relative):
                if owner not in seen:
                    why = self.stage_problem(owner, seen)
                    if why:
                        return why
        return None

    def _fingerprint(self, path: Path, dataset: bool = False) -> dict[str, Any]:
        memo = (path.resolve(), dataset)
        if memo not in self._fingerprints:
            self._fingerprints[memo] = (
                dataset_fingerprint(path, self.root) if dataset else fingerprint(path, self.root)
            )
        return self._fingerprints[memo]

    def _differs(self, path: Path, recorded: Any, name: str) -> bool:
        if isinstance(recorded, Mapping) and "content" not in recorded:
            self.unchecked[name] = "recorded by an older pcb, not by content"
            return False
        return not same_fingerprint(recorded, self._fingerprint(path))

    def _detail(self, shown: str, recorded: Mapping[str, Any], path: Path | None = None) -> str:
        """The files that changed, when they can be named: ": a (expected .., found ..)"."""
        path = path or self.root / shown
        changes = describe_changes(path, recorded, self.root)
        if not changes:
            return ""
        named = "; ".join(c.describe() for c in changes[:NAMED])
        more = f"; and {len(changes) - NAMED} more" if len(changes) > NAMED else ""
        return f": {named}{more}"


def describe_changes(
    path: Path, recorded: Mapping[str, Any], run_root: Path, cached: bool = True
) -> list[FileChange]:
    """The files of an input or output that differ from its recorded fingerprint, as far
    as they can be named (a folder's listing may be gone); `cached=False` reads every file."""
    from .digest import DigestStore
    from .fingerprint import dataset_split_folder

    store = digest_store(run_root) if cached else DigestStore(None)
    kind = recorded.get("kind")
    if kind == "file":
        try:
            found: str | None = store.digest(path) if path.is_file() else None
        except OSError:
            found = None
        expected = recorded.get("digest")
        return [] if found == expected else [FileChange(path.name, expected, found)]
    if kind == "tree":
        return tree_changes(path, recorded, run_root, store) or []
    if kind == "dataset":
        changes = []
        for split in ("query", "gallery"):
            folder = dataset_split_folder(path, split)
            split_fp = recorded.get(split)
            if folder is None or not isinstance(split_fp, Mapping):
                continue
            for change in tree_changes(folder, split_fp, run_root, store) or []:
                changes.append(FileChange(f"{folder.name}/{change.name}", *_pair(change)))
        return changes
    return []


def _pair(change: FileChange) -> tuple[str | None, str | None]:
    return change.expected, change.found


def _planned(entry: Mapping[str, Any]) -> list[str]:
    planned = entry.get("planned_outputs")
    return [str(p) for p in planned] if isinstance(planned, list) else []


# ---------------------------------------------------------------- merging entries from elsewhere


def merge_entries(
    root: Path,
    stages: Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    template: Mapping[str, Any] | None = None,
) -> None:
    """Put these stage entries (and run inputs) into the run's manifest, keeping every other
    entry: how a stage that ran elsewhere (a remote engine's copy of the run folder) records
    itself here. Read, change and write happen under one lock per run folder, so that chains
    merging at once in threads of this process each keep the other's entries (a plain
    fetch of the far side's manifest would overwrite them). A run without a manifest starts
    from `template` (the far side's whole manifest) or a new one."""
    with folder_lock("manifest merge", root):
        manifest = read_manifest(root)
        if manifest is None:
            manifest = dict(template) if template is not None else new_manifest(root)
            manifest.setdefault("stages", {})
            manifest.setdefault("inputs", {})
        manifest["stages"].update(stages)
        manifest["inputs"].update(inputs or {})
        write_manifest(root, manifest)
