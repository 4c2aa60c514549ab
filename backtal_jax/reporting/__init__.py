"""What a run tells people: console logs and progress, TensorBoard event files, the run's records
(config, versions, phase times), and the mAP tables and averages of an evaluation.

May import the ground floor (backtal_jax.core) only.
"""
