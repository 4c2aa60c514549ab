"""Where a run's wall time goes: seconds per phase of the loop, and the compilation inside each.

Phases nest: time spent in an inner phase (an evaluation inside an epoch's end) is counted there
and not in the outer one, so the seconds add up to the time measured. JAX reports every tracing,
lowering and XLA compilation through jax.monitoring; each is credited to the phase it happened in.
The run writes the result to WORKDIR/phases.json (benchmarks/side_by_side.py reads it).
"""

import collections
import contextlib
import time
from typing import Iterator

import jax

# jax/_src/dispatch.py: tracing to a jaxpr, lowering to MLIR, XLA's compilation.
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')


class PhaseTimes:
  """Exclusive wall seconds per phase, entered with `with phases('name'):`."""

  def __init__(self):
    self.seconds: dict[str, float] = collections.defaultdict(float)
    self.compile_seconds: dict[str, float] = collections.defaultdict(float)
    self.started_unix = time.time()
    self._stack: list[str] = ['other']
    self._mark = time.perf_counter()

  def _charge(self) -> None:
    now = time.perf_counter()
    self.seconds[self._stack[-1]] += now - self._mark
    self._mark = now

  @contextlib.contextmanager
  def __call__(self, name: str) -> Iterator[None]:
    self._charge()
    self._stack.append(name)
    try:
      yield
    finally:
      self._charge()
      self._stack.pop()

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event in COMPILE_EVENTS:
      self.compile_seconds[self._stack[-1]] += duration

  @contextlib.contextmanager
  def counting_compilation(self) -> Iterator['PhaseTimes']:
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    try:
      yield self
    finally:
      jax.monitoring.unregister_event_duration_listener(self._on_duration)

  def record(self) -> dict:
    """The seconds so far (the current phase charged up to now), for phases.json."""
    self._charge()
    return {'started_unix': self.started_unix, 'ended_unix': time.time(),
            'seconds': dict(self.seconds), 'compile_seconds': dict(self.compile_seconds)}
