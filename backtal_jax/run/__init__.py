"""The training run and the runs built on a trained model: the loop, its state and history
records, orbax checkpoints, the optimiser, pre-flight checks (which collect every declared config
field), the run's identity on resume, stop signals, the workdir lock, finiteness, the end-of-run
report, evaluation-only runs and the Predictor.

May import every other part; only the commands (backtal_jax.main, .evaluate, .predict) import it.
"""
