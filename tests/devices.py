"""The device counts tests need. conftest.py simulates four CPU devices unless XLA_FLAGS was set
before (`.ci/run` also runs the tests marked `one_device` at one): a test that compares counts
asserts it has them, instead of silently comparing one device with one."""

import os

import jax


def first_devices(count: int) -> list[jax.Device]:
  devices = jax.devices()
  assert len(devices) >= count, (
      f'this test needs {count} devices, found {len(devices)} '
      f'(XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}); run it without the one-device XLA_FLAGS')
  return devices[:count]
