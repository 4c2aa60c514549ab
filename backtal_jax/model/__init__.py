"""The network: the Flax modules, the affinity convolution, the top-k video score, the losses, and
the official PyTorch weights.

May import the ground floor (backtal_jax.core) and nothing else of backtal_jax, the mesh
included: the network sees arrays and their shardings, never files, batches or runs. The losses
take arrays (they import no Flax module).
"""
