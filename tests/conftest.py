"""Test setup: four CPU devices, so the sharded code paths run without an accelerator."""

import os
import pathlib

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

TESTDATA = pathlib.Path(__file__).parent / 'testdata'
