"""A small synthetic Market-1501 look-alike, so the whole pipeline runs without the real data.

Each identity wears its own pair of clothing colours and an upper-body pattern; cameras change
the background, brightness, colour cast and framing. The differences are coarse on purpose: even
an untrained network's features must retrieve the right identity far above chance, so a broken
stage (wrong order of bins, swapped query/gallery, bad metric) shows up as a collapse in accuracy.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .constants import DEMO_MARKER
from .dataset import NUM_CAMERAS
from .errors import PcbError
from .fileio import atomic_write_text, read_json
from .layout import MARKET_FOLDER

WIDTH, HEIGHT = 64, 128  # Market-1501 crops are 64x128 (w x h)
JPEG_QUALITY = 90
CHECKPOINT_NAME = "PCB_demo.pt"
MARKER_NAME = DEMO_MARKER
# Bumped whenever the drawing changes, so an old demo folder is not mistaken for a current one.
DEMO_VERSION = 1
# Market person ids are 4 digits; two more ids are drawn for the token training split.
MAX_IDENTITIES = 1499

_PALETTE = np.array(
    [
        (200, 30, 30),  # red
        (30, 60, 200),  # blue
        (30, 160, 50),  # green
        (230, 200, 30),  # yellow
        (240, 240, 240),  # white
        (25, 25, 25),  # black
        (140, 40, 170),  # purple
        (240, 130, 20),  # orange
        (30, 180, 190),  # cyan
        (240, 110, 170),  # pink
        (120, 75, 35),  # brown
        (130, 130, 130),  # grey
    ],
    dtype=np.float32,
)
_PATTERNS = ("solid", "hstripes", "vstripes", "checks")

README = """\
Synthetic demo data written by `python -m pcb demo-data` (`invoke demo-data`).

- Market-1501-v15.09.15/: drawn figures, named and laid out like Market-1501
  (query/, bounding_box_test/ with junk -1_* and distractor 0000_* images, bounding_box_train/).
- PCB_demo.pt: a PCB checkpoint with UNTRAINED (randomly initialised) weights.

They exercise every stage end to end. Accuracy and throughput measured on them say nothing about
PCB: the numbers are not comparable to the guide's. For real numbers see data/README.md.
"""


@dataclass(frozen=True)
class DemoPaths:
    dataset_root: Path
    checkpoint: Path


@dataclass(frozen=True)
class _Identity:
    pid: int
    upper: np.ndarray
    lower: np.ndarray
    accent: np.ndarray
    pattern: str
    period: int
    skin: np.ndarray
    cameras: tuple[int, ...]


@dataclass(frozen=True)
class _Camera:
    background: np.ndarray  # HxWx3 float32
    brightness: float
    cast: np.ndarray  # per-channel gain


def _make_cameras(rng: np.random.Generator) -> dict[int, _Camera]:
    cameras = {}
    ys = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    for cam in range(1, NUM_CAMERAS + 1):
        # Muted backgrounds: a loud one would dominate untrained features and make images of
        # one camera look alike whoever is in them.
        top = (rng.uniform(90, 170) + rng.uniform(-15, 15, 3)).astype(np.float32)
        bottom = (rng.uniform(90, 170) + rng.uniform(-15, 15, 3)).astype(np.float32)
        background = np.broadcast_to(top * (1 - ys) + bottom * ys, (HEIGHT, WIDTH, 3)).copy()
        cameras[cam] = _Camera(
            background=background,
            brightness=float(rng.uniform(0.75, 1.2)),
            cast=rng.uniform(0.9, 1.1, 3).astype(np.float32),
        )
    return cameras


def _make_identities(rng: np.random.Generator, count: int) -> list[_Identity]:
    pids = np.sort(rng.choice(np.arange(1, MAX_IDENTITIES + 3), size=count, replace=False))
    # Distinct (upper, lower, pattern) triples while they last, so identities differ coarsely.
    combos = [
        (u, lo, p)
        for u in range(len(_PALETTE))
        for lo in range(len(_PALETTE))
        if u != lo
        for p in range(len(_PATTERNS))
    ]
    order = rng.permutation(len(combos))
    identities = []
    for index, pid in enumerate(pids):
        upper, lower, pattern = combos[order[index % len(combos)]]
        jitter = rng.uniform(-15, 15, (3, 3)).astype(np.float32)
        accent = (upper + 1 + rng.integers(len(_PALETTE) - 1)) % len(_PALETTE)
        n_cams = int(rng.integers(3, NUM_CAMERAS + 1))
        cameras = tuple(int(c) for c in rng.choice(np.arange(1, NUM_CAMERAS + 1), n_cams, False))
        identities.append(
            _Identity(
                pid=int(pid),
                upper=np.clip(_PALETTE[upper] + jitter[0], 0, 255),
                lower=np.clip(_PALETTE[lower] + jitter[1], 0, 255),
                accent=np.clip(_PALETTE[accent] + jitter[2], 0, 255),
                pattern=_PATTERNS[pattern],
                period=int(rng.integers(3, 9)),
                skin=rng.uniform([150, 100, 70], [235, 190, 160]).astype(np.float32),
                cameras=cameras,
            )
        )
    return identities


def _figure_masks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Template coordinates of every pixel after a random shift and scale, and the body masks."""
    scale = rng.uniform(0.94, 1.02)
    dx, dy = rng.uniform(-2, 2), rng.uniform(-2, 2)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    tx = (WIDTH / 2) + (xs - WIDTH / 2 - dx) / scale
    ty = (HEIGHT / 2) + (ys - HEIGHT / 2 - dy) / scale
    masks = {
        "head": ((tx - 32) / 8) ** 2 + ((ty - 16) / 10) ** 2 <= 1,
        "torso": (ty >= 26) & (ty < 68) & (np.abs(tx - 32) <= 15 + (ty - 26) * 0.05),
        "arms": (ty >= 28) & (ty < 66) & (np.abs(tx - 32) > 15) & (np.abs(tx - 32) <= 21),
        "legs": (ty >= 68) & (ty < 118) & (np.abs(tx - 32) >= 1.5) & (np.abs(tx - 32) <= 14),
        "shoes": (ty >= 118) & (ty < 124) & (np.abs(tx - 32) >= 1.5) & (np.abs(tx - 32) <= 15),
    }
    return tx, ty, masks


def _pattern_mask(identity: _Identity, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    rows = (np.floor(ty / identity.period) % 2).astype(bool)
    cols = (np.floor(tx / identity.period) % 2).astype(bool)
    if identity.pattern == "hstripes":
        return rows
    if identity.pattern == "vstripes":
        return cols
    if identity.pattern == "checks":
        return rows ^ cols
    return np.zeros_like(rows)


def _draw_person(rng: np.random.Generator, identity: _Identity, camera: _Camera) -> np.ndarray:
    canvas = camera.background.copy()
    tx, ty, masks = _figure_masks(rng)
    torso_colour = np.where(
        _pattern_mask(identity, tx, ty)[..., None], identity.accent, identity.upper
    )
    canvas[masks["arms"]] = identity.upper * 0.85
    canvas[masks["torso"]] = torso_colour[masks["torso"]]
    canvas[masks["legs"]] = identity.lower
    canvas[masks["shoes"]] = (30, 30, 30)
    canvas[masks["head"]] = identity.skin
    return _through_camera(rng, canvas, camera)


def _through_camera(rng: np.random.Generator, canvas: np.ndarray, camera: _Camera) -> np.ndarray:
    lit = canvas * camera.cast * camera.brightness * rng.uniform(0.93, 1.07)
    noisy = lit + rng.normal(0.0, 6.0, lit.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _draw_junk(rng: np.random.Generator, camera: _Camera) -> np.ndarray:
    # Market's junk are bad detections: mostly background with a fragment of something.
    canvas = camera.background.copy()
    top, left = int(rng.integers(0, HEIGHT // 2)), int(rng.integers(0, WIDTH // 2))
    h, w = int(rng.integers(10, HEIGHT // 2)), int(rng.integers(8, WIDTH // 2))
    canvas[top : top + h, left : left + w] = rng.uniform(0, 255, 3)
    return _through_camera(rng, canvas, camera)


def _draw_distractor(rng: np.random.Generator, camera: _Camera) -> np.ndarray:
    # A person-like figure in random colours belonging to no identity: a hard negative.
    stranger = _Identity(
        pid=0,
        upper=rng.uniform(0, 255, 3).astype(np.float32),
        lower=rng.uniform(0, 255, 3).astype(np.float32),
        accent=rng.uniform(0, 255, 3).astype(np.float32),
        pattern=_PATTERNS[int(rng.integers(len(_PATTERNS)))],
        period=int(rng.integers(3, 9)),
        skin=rng.uniform([150, 100, 70], [235, 190, 160]).astype(np.float32),
        cameras=(),
    )
    return _draw_person(rng, stranger, camera)


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


class _Namer:
    """Market names PPPP_cCsS_FFFFFF_BB.jpg, with frames counted per camera so names never clash."""

    def __init__(self) -> None:
        self._frames = {cam: 0 for cam in range(1, NUM_CAMERAS + 1)}

    def __call__(self, pid: int, cam: int) -> str:
        self._frames[cam] += 1
        frame = self._frames[cam]
        sequence = 1 + frame // 500
        prefix = "-1" if pid == -1 else f"{pid:04d}"
        return f"{prefix}_c{cam}s{sequence}_{frame * 25:06d}_{frame % 3:02d}.jpg"


def _generate(folder: Path, seed: int, identities: int) -> None:
    """Every image of the demo dataset into `folder` (query/, bounding_box_test/, ..._train/)."""
    rng = np.random.default_rng(seed)
    cameras = _make_cameras(rng)
    # Training identities drawn with the test ones so their ids never overlap, as in Market.
    everyone = _make_identities(rng, identities + 2)
    people, trainees = everyone[:identities], everyone[identities:]
    name = _Namer()
    for split in ("query", "bounding_box_test", "bounding_box_train"):
        (folder / split).mkdir(parents=True)

    def save(split: str, filename: str, pixels: np.ndarray) -> None:
        (folder / split / filename).write_bytes(_jpeg(pixels))

    for person in people:
        # Two queries from different cameras; the gallery holds both those cameras (the same-
        # camera image must be excluded by the metric, the other is a valid cross-camera match),
        # a third camera, and one to three more views from any of the person's cameras.
        query_cams = person.cameras[:2]
        gallery_cams = list(person.cameras[:3]) + [
            int(c) for c in rng.choice(person.cameras, int(rng.integers(1, 4)))
        ]
        for cam in query_cams:
            save("query", name(person.pid, cam), _draw_person(rng, person, cameras[cam]))
        for cam in gallery_cams:
            save(
                "bounding_box_test", name(person.pid, cam), _draw_person(rng, person, cameras[cam])
            )
    for _ in range(max(3, identities // 4)):
        cam = int(rng.integers(1, NUM_CAMERAS + 1))
        save("bounding_box_test", name(-1, cam), _draw_junk(rng, cameras[cam]))
    for _ in range(max(3, identities // 2)):
        cam = int(rng.integers(1, NUM_CAMERAS + 1))
        save("bounding_box_test", name(0, cam), _draw_distractor(rng, cameras[cam]))
    # A token training split: Market has one; the pipeline never reads it.
    for person in trainees:
        for cam in person.cameras[:3]:
            save(
                "bounding_box_train", name(person.pid, cam), _draw_person(rng, person, cameras[cam])
            )


def _marker(seed: int, identities: int) -> dict[str, int]:
    return {"demo_version": DEMO_VERSION, "seed": seed, "identities": identities}


def _existing_is_current(dataset_root: Path, marker: dict[str, Any]) -> bool:
    if not dataset_root.exists():
        return False
    try:
        found = read_json(dataset_root / MARKER_NAME)
    except (OSError, ValueError):
        found = None
    if found == marker:
        return True
    what = f"was written with {found}" if found else "is not a pcb demo folder"
    raise PcbError(
        f"{dataset_root} already exists and {what}, not {marker}: "
        f"delete {dataset_root} to rewrite it, or pass another --out folder"
    )


def _write_aside(out: Path, marker: dict[str, Any], generate: Callable[[Path], None]) -> Path:
    """The Market folder under `out` drawn by `generate`, built aside and renamed into place;
    kept as it is when its marker says it was drawn with the same settings."""
    out = Path(out)
    dataset_root = out / MARKET_FOLDER
    if _existing_is_current(dataset_root, marker):
        return dataset_root
    out.mkdir(parents=True, exist_ok=True)
    building = out / f".{MARKET_FOLDER}.{os.getpid()}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    try:
        generate(building)
        (building / MARKER_NAME).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        os.rename(building, dataset_root)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        # Another process may have finished the same folder first: fine if it is current.
        if _existing_is_current(dataset_root, marker):
            return dataset_root
        raise
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return dataset_root


def write_dataset(out: Path, seed: int = 0, identities: int = 24) -> Path:
    """The demo Market folder under `out`, built aside and renamed into place; kept if current."""
    if not 1 <= identities <= MAX_IDENTITIES:
        raise PcbError(f"identities must be 1..{MAX_IDENTITIES}, got {identities}")
    return _write_aside(
        out, _marker(seed, identities), lambda folder: _generate(folder, seed, identities)
    )


# ---------------------------------------------------------------- Market-1501's size

# Market-1501's test split (facts.md section 3; the dataset's page, liangzheng.com.cn/Project/
# project_reid.html, for the 2,793 distractors and "one query image for each camera"): 750
# identities with 3,368 query images, and 19,732 gallery images of which 3,819 are junk and
# 2,793 distractors, which leaves 13,120 images of the 750 identities.
MARKET_IDENTITIES = 750
MARKET_QUERY = 3368
MARKET_GALLERY_IDENTITY_IMAGES = 13120
MARKET_DISTRACTORS = 2793
MARKET_JUNK = 3819


@dataclass(frozen=True)
class MarketCounts:
    """How many images of each kind a Market-sized demo at `scale` has."""

    identities: int
    query: int
    gallery_identity_images: int
    distractors: int
    junk: int

    @classmethod
    def at_scale(cls, scale: float) -> MarketCounts:
        if not 0 < scale <= 1:
            raise PcbError(f"scale must be in (0, 1] (1 = Market-1501's size), got {scale}")
        identities = max(2, round(MARKET_IDENTITIES * scale))
        # Market's ratios, kept at any scale: about 4.5 queries and 17.5 gallery images per
        # identity (at least 2 queries, one per camera, and never more than 6 cameras).
        query = min(max(2 * identities, round(MARKET_QUERY * scale)), 6 * identities)
        return cls(
            identities=identities,
            query=query,
            gallery_identity_images=max(query, round(MARKET_GALLERY_IDENTITY_IMAGES * scale)),
            distractors=max(1, round(MARKET_DISTRACTORS * scale)),
            junk=max(1, round(MARKET_JUNK * scale)),
        )

    @property
    def gallery(self) -> int:
        """Gallery images the dataset stage keeps (junk dropped): 15,913 at scale 1."""
        return self.gallery_identity_images + self.distractors

    @property
    def bounding_box_test(self) -> int:
        return self.gallery + self.junk


def _spread(total: int, parts: int) -> list[int]:
    """`total` split over `parts` as evenly as integers allow."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _generate_market(folder: Path, seed: int, counts: MarketCounts) -> None:
    """A Market-sized test split: each identity has one query per camera it is queried
    from, and gallery views from every one of its cameras (so every query has a match from
    another camera), then the rest of its gallery images from cameras at random."""
    rng = np.random.default_rng(seed)
    cameras = _make_cameras(rng)
    people = _make_identities(rng, counts.identities)
    name = _Namer()
    for split in ("query", "bounding_box_test", "bounding_box_train"):
        (folder / split).mkdir(parents=True)

    def save(split: str, filename: str, pixels: np.ndarray) -> None:
        (folder / split / filename).write_bytes(_jpeg(pixels))

    queries = _spread(counts.query, counts.identities)
    gallery = _spread(counts.gallery_identity_images, counts.identities)
    order = rng.permutation(counts.identities)  # which identities get the extra images
    for index, person in zip(order, people):
        asked, views = queries[index], gallery[index]
        # Enough cameras for its queries (and two at least), as Market's identities.
        count = int(rng.integers(max(2, asked), NUM_CAMERAS + 1))
        own = [int(c) for c in rng.choice(np.arange(1, NUM_CAMERAS + 1), count, replace=False)]
        for cam in own[:asked]:
            save("query", name(person.pid, cam), _draw_person(rng, person, cameras[cam]))
        seen = own + [int(c) for c in rng.choice(own, max(0, views - len(own)))]
        for cam in seen[:views]:
            save(
                "bounding_box_test", name(person.pid, cam), _draw_person(rng, person, cameras[cam])
            )
    for _ in range(counts.distractors):
        cam = int(rng.integers(1, NUM_CAMERAS + 1))
        save("bounding_box_test", name(0, cam), _draw_distractor(rng, cameras[cam]))
    for _ in range(counts.junk):
        cam = int(rng.integers(1, NUM_CAMERAS + 1))
        save("bounding_box_test", name(-1, cam), _draw_junk(rng, cameras[cam]))


def write_market_scale_dataset(out: Path, seed: int = 0, scale: float = 1.0) -> Path:
    """A synthetic Market folder of Market-1501's size (or `scale` of it) under `out`.

    At scale 1: 3,368 query and 19,732 gallery JPEGs (3,819 junk, 2,793 distractors), 750
    identities, about 150 MB; preprocessed, its 19,281 bins take 11.4 GB. Drawn like the demo
    (pcb.demo), kept when current, built aside and renamed into place.
    """
    counts = MarketCounts.at_scale(scale)
    marker = {**_marker(seed, counts.identities), "layout": "market-scale", "scale": scale}
    return _write_aside(out, marker, lambda folder: _generate_market(folder, seed, counts))


def write_demo(out: Path, seed: int = 0, identities: int = 24) -> DemoPaths:
    """Synthetic dataset + untrained checkpoint under `out` (e.g. data/demo); reused if current."""
    out = Path(out)
    dataset_root = write_dataset(out, seed=seed, identities=identities)
    checkpoint = out / CHECKPOINT_NAME
    if not checkpoint.is_file():
        try:
            from .checkpoint import write_demo_checkpoint
        except ModuleNotFoundError as error:
            if error.name != "torch":
                raise
            raise PcbError(
                f"writing the demo checkpoint {checkpoint} needs torch: install it with "
                f"`pip install -e .[export]` or run `invoke demo-data` (uses the export image)"
            ) from None
        write_demo_checkpoint(checkpoint, seed=seed)
    readme = out / "README.txt"
    if not readme.is_file() or readme.read_text(encoding="utf-8") != README:
        atomic_write_text(readme, README)
    return DemoPaths(dataset_root=dataset_root, checkpoint=checkpoint)
