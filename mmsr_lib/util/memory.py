"""Peak resident memory of this process, as the kernel counts it (Linux ``VmHWM``).

`mmsr plan` and notebook 09's memory column both need "the peak since a point in time";
the kernel keeps that number, and writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0)
resets it to the current resident set. Elsewhere both functions say they cannot (None, False)
and callers fall back to ``ru_maxrss`` or sampling.
"""

from __future__ import annotations


def peak_rss_bytes() -> int | None:
    """The kernel's peak resident set of this process in bytes, or None where unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset `peak_rss_bytes` to the current resident set; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return peak_rss_bytes() is not None
    except OSError:
        return False
