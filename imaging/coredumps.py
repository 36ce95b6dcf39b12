"""No core dump of a process that holds a passphrase or a master key.

A crash under ``ulimit -c unlimited`` wrote a core file holding the passphrase twice (the
environment block and Python's string) readable by whoever reads the crash directory.
:func:`forbid_core_dumps` is called where a secret enters the process: the CLI's passphrase
source (``imaging.passphrase``), every passphrase handed to a repository
(``store._resolve``) and every master key (``keys.Keys``), which covers the CLI, the app, the
unattended runs and the file-level restore's helper process that receives the key on a pipe.
"""

from __future__ import annotations

import ctypes
import resource

from imaging.libc import libc as load_libc

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def forbid_core_dumps() -> None:
    """Make this process (and what it forks) never dump core; cheap enough to repeat.

    Both, because each alone leaks: RLIMIT_CORE 0 is ignored when ``core_pattern`` pipes to
    a crash collector (systemd-coredump, apport, which only may honour it), and the dumpable
    flag is reset by ``setuid`` calls. A non-dumpable process also cannot be attached to with
    ``ptrace`` or read through ``/proc/<pid>/mem`` by other users. Only the soft limit drops:
    lowering the hard limit cannot be undone without CAP_SYS_RESOURCE, and a child may want
    core files (an ``execve`` makes it dumpable again; it holds no secret).
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    libc = load_libc()
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def dumpable() -> bool:
    """Whether this process may still dump core (``prctl(PR_GET_DUMPABLE)``)."""
    libc = load_libc()
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
