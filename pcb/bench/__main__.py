"""`python -m pcb.bench [--quick] [--only NAMES]`: see pcb/bench/runner.py."""

from __future__ import annotations

import sys

from .runner import main

sys.exit(main())
