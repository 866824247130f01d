"""Run a pipeline stage on the host or in its container (host side: no torch needed)."""
