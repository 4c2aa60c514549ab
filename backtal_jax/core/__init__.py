"""The ground floor: errors, atomic files, config field declarations, the device mesh, batch rows,
label conventions and resampling along time.

Imports nothing else of backtal_jax; every other part may import it.
"""
