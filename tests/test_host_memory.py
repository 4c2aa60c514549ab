"""The command asks glibc for huge pages by re-executing itself once, keeping a user's choice."""

import os
import subprocess
import sys

import pytest

from backtal_jax.run import host_memory

SCRIPT = ('import os, sys; from backtal_jax.run import host_memory; '
          'print(os.getpid(), flush=True); host_memory.use_huge_pages(); '
          'print(os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:])')

pytestmark = pytest.mark.skipif(host_memory.glibc_version() < (2, 35),
                                reason='glibc.malloc.hugetlb needs glibc >= 2.35')


def run(tunables):
  environment = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  if tunables:
    environment['GLIBC_TUNABLES'] = tunables
  lines = subprocess.run([sys.executable, '-c', SCRIPT, 'an', 'argument'], env=environment,
                         capture_output=True, text=True, check=True).stdout.splitlines()
  return lines


def test_reexecutes_once_with_the_tunable_and_the_same_arguments():
  first, *rest = run('')
  assert len(rest) == 2  # started twice (the first pid line again), finished once
  assert rest[0] == first  # execve keeps the process
  assert rest[1] == f"{first} glibc.malloc.hugetlb=1 ['an', 'argument']"


def test_keeps_other_tunables_and_a_users_own_value():
  assert run('glibc.malloc.arena_max=2')[-1].split(' ', 1)[1] == (
      "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1 ['an', 'argument']")
  lines = run('glibc.malloc.hugetlb=0')
  assert len(lines) == 2
  assert lines[1].split(' ', 1)[1] == "glibc.malloc.hugetlb=0 ['an', 'argument']"
