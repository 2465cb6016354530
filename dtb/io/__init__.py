"""Run files: writing them (runfile, recording, checkpoint) and reading them for analysis (analysis)."""

from dtb.io.analysis import Run, open_run

__all__ = ["Run", "open_run"]
