"""Where a run's wall time goes: nested phases count once, compilation lands in its phase."""

import time

import jax
import jax.numpy as jnp

from backtal_jax.reporting import phase_times


def test_nested_phases_are_exclusive_and_add_up_to_the_time_measured():
  phases = phase_times.PhaseTimes()
  started = time.perf_counter()
  with phases('outer'):
    time.sleep(0.05)
    with phases('inner'):
      time.sleep(0.1)
    with phases('outer'):  # re-entering a phase adds to it
      time.sleep(0.02)
  record = phases.record()
  elapsed = time.perf_counter() - started
  seconds = record['seconds']
  assert 0.1 <= seconds['inner'] < elapsed - 0.07
  assert 0.07 <= seconds['outer'] < elapsed - 0.1
  assert abs(sum(seconds.values()) - elapsed) < 0.05  # 'other' holds the moments outside
  assert record['started_unix'] <= record['ended_unix']


def test_compilation_is_credited_to_the_phase_it_happened_in():
  phases = phase_times.PhaseTimes()
  step = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
  with phases.counting_compilation():
    with phases('compiles'):
      step(jnp.arange(7.0)).block_until_ready()
    with phases('cached'):
      step(jnp.arange(7.0)).block_until_ready()
  after = jax.jit(lambda x: x - 2.0)
  after(jnp.ones(3)).block_until_ready()  # the listener is gone: not counted anywhere
  compiled = phases.record()['compile_seconds']
  assert set(compiled) == {'compiles'} and compiled['compiles'] > 0
