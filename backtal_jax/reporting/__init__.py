"""What a run tells people: console logs and progress, TensorBoard event files, the run's records
(config, versions, phase times), and what an evaluation reports: each number's one name
(averages.py), the summary, the tables.

May import the ground floor (backtal_jax.core) only.
"""
