"""Peak resident memory of this process, as a user would see it (``/usr/bin/time -f %M``).

``getrusage(...).ru_maxrss`` is inherited across ``fork`` and kept across ``exec`` on Linux, so a
benchmark started by another Python process would report its parent's peak; the kernel's ``VmHWM``
(high-water mark of this process's own address space) starts afresh at ``exec``.
"""

from __future__ import annotations

import resource


def peak_rss_kib() -> int:
    """Peak RSS in KiB: ``VmHWM`` from ``/proc/self/status``, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            lines = status.readlines()
    except OSError:  # not Linux: the rusage figure (not reset at exec) is the best there is
        lines = []
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
