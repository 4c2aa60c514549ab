"""Everything between files on disk and device batches: annotations, clicks, feature files, the
synthetic testbed, TFDS, the input pipeline and its feeds.

May import the ground floor (backtal_jax.core); never the network, evaluation, reporting or the
run.
"""
