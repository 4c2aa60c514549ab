"""Transparent huge pages for the CPU's XLA buffers, asked for before anything is allocated.

On the CPU every train step gets its temporaries (about 260 MB at the testbed's width) from
glibc's malloc, which maps large blocks fresh each time; the kernel then faults them in 4 KB at a
time. In the 40-epoch testbed run that was 36 M page faults and a fifth of the process's CPU
time (benchmarks/RESULTS.md). glibc >= 2.35 can ask for transparent huge pages on the blocks it
maps (`glibc.malloc.hugetlb=1`), which cuts the faults 20-fold where the kernel's
/sys/kernel/mm/transparent_hugepage/enabled allows it ('madvise' or 'always'). glibc reads its
tunables only at process start, so the command re-executes itself once with the tunable set.
Where the memory lives changes; no computed number does.
"""

import os
import sys

TUNABLE = 'glibc.malloc.hugetlb'


def glibc_version() -> tuple[int, ...]:
  """(major, minor) of the C library when it is glibc, else ()."""
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()
  except (AttributeError, ValueError, OSError):
    return ()
  return tuple(int(part) for part in version.split('.')[:2]) if name == 'glibc' else ()


def use_huge_pages() -> None:
  """Re-executes this command with glibc.malloc.hugetlb=1 added to GLIBC_TUNABLES, unless the
  tunable is already set (a user's own value wins) or the C library cannot use it."""
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if TUNABLE in tunables or glibc_version() < (2, 35):
    return
  environment = dict(os.environ, GLIBC_TUNABLES=':'.join(filter(None, (tunables, TUNABLE + '=1'))))
  os.execve(sys.executable, sys.orig_argv, environment)
