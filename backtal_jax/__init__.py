"""BackTAL in JAX/Flax: background-click supervision for temporal action localization."""
