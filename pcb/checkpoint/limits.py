"""How much a checkpoint may ask of the loader before it is refused.

Each limit is far above what PCB needs and far below what would hurt the machine, so a real
checkpoint never meets one and a hostile one is stopped before it costs memory or time.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Limits:
    # PCB holds 27.3 M parameters and buffers, 104 MiB of float32 (the demo checkpoint's
    # size); 1 GiB is ten times that and a small part of any machine that runs the pipeline.
    storage_bytes: int = GIB
    # The pickle itself (not the tensor data): the demo model's is 70 KB in a zip, 108 KB in
    # the legacy format, which also carries the source text of the module classes.
    pickle_bytes: int = 64 * MIB
    # Pickle operations executed: the demo model needs about 29,000.
    pickle_operations: int = 1_000_000
    # Nesting of modules and of tuples: PCB's modules nest 5 deep, its tuples 2.
    depth: int = 200


LIMITS = Limits()


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KiB': sizes in messages, in the units the limits are stated in."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
