"""What a stage job used of the machine, for the summaries it writes."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB.

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS. A process started directly by a large
    Python process (not through a shell) may report its parent's peak.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
