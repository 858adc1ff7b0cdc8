"""Entry point of the `mithril` console script in pip installs: run the
bundled C command (mithril_cache/bin/mithril), else the one on PATH, with
the same arguments. The process is replaced (exec), so exit status and
signals are the command's own."""

import os
import sys


def find_binary():
    """Return the path of the mithril command to run, or None: the copy
    bundled next to this package (bin/mithril), else `mithril` on PATH
    (skipping this very script)."""
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = os.path.join(here, "bin", "mithril")
    if os.access(bundled, os.X_OK):
        return bundled
    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(folder or ".", "mithril")
        if os.access(cand, os.X_OK) and os.path.isfile(cand) and \
                os.path.realpath(cand) != me:
            return cand
    return None


def main():
    """Exec the mithril command with this process's arguments."""
    exe = find_binary()
    if exe is None:
        sys.stderr.write("mithril: error: the mithril command is not "
                         "installed (no bin/mithril beside the package, "
                         "none on PATH)\n")
        return 127
    os.execv(exe, [exe] + sys.argv[1:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
