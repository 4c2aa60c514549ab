"""Collecting clicks on one's own videos: the annotation page and its server, the annotation files
it writes (and Label Studio and VIA exports), their import into the feature files' labels, and what
the clicks cost.

May import the ground floor (backtal_jax.core) and the data layer (backtal_jax.data: clicks,
ground truth, feature files); never the network, evaluation, reporting or the run.
"""
