"""Numbers the guide and the paper publish: the reference the measurements are compared to.

They are quoted, never measured here (facts.md sections 3 and 6), and every report that shows
them says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import GUIDE_ACCURACY

PUBLISHED_SOURCE = "published (guide 7.4), not measured here"

# The guide's table 7.4, images/s per card. Its T4 rows are mislabelled in the guide ("batch4 T1"
# is batch 1, the second "batch32" is batch 64); these are the corrected batch sizes.
GUIDE_THROUGHPUT: dict[str, dict[int, float]] = {
    "310": {1: 549.688, 4: 1296.72, 8: 1375.24, 16: 1411.96, 32: 1212.25, 64: 1188.12},
    "310P": {1: 352.617, 4: 1512.1, 8: 1897.91, 16: 1492.53, 32: 1706.04, 64: 1857.43},
    "310P_aoe": {1: 1033.16, 4: 2364.58, 8: 2228.24, 16: 1999.29, 32: 2002.7, 64: 2039.35},
    "T4": {1: 749.002, 4: 1209.63, 8: 1383.09, 16: 1495.91, 32: 1554.99, 64: 1578.09},
}
# The guide's "best" row, kept as printed so a test can hold it to the table above.
GUIDE_BEST: dict[str, float] = {
    "310": 1411.96,
    "310P": 1897.91,
    "310P_aoe": 2364.58,
    "T4": 1578.09,
}


@dataclass(frozen=True)
class PublishedColumn:
    name: str
    device: str
    tool: str
    platform_class: str  # NPU or GPU, as the measured columns are classified
    note: str


GUIDE_COLUMNS = (
    PublishedColumn(
        "310",
        "Atlas 300I (Ascend 310, 4 chips)",
        "benchmark (CANN 5.1.RC1)",
        "NPU",
        "Interface throughputRate x 4 chips",
    ),
    PublishedColumn("310P", "Ascend 310P3", "benchmark (CANN 5.1.RC1)", "NPU", ""),
    PublishedColumn(
        "310P_aoe", "Ascend 310P3, AOE-tuned model", "benchmark (CANN 5.1.RC1)", "NPU", ""
    ),
    PublishedColumn(
        "T4", "NVIDIA T4", "trtexec (TensorRT 7.2.3.4) fp16", "GPU", "1000 x batch / mean GPU ms"
    ),
)
GUIDE_SCOPE = "card"

# The guide publishes top-1/5/10 only (GUIDE_ACCURACY, as fractions); mAP comes from the paper.
PAPER_MAP = 0.774  # arXiv 1711.09349, PCB without RPP
PAPER_TOP1 = 0.923
PUBLISHED_ACCURACY = dict(GUIDE_ACCURACY)
