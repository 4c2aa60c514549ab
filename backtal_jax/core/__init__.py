"""The ground floor: errors, atomic files, config field declarations, the device mesh, batch rows,
label conventions, resampling along time, and which videos a ground truth lacks.

Imports nothing else of backtal_jax; every other part may import it.
"""
