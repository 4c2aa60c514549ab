"""Evaluation: post-processing (CAS -> detections), mAP, plots, and the evaluator that runs a
model over a split and scores it for training, evaluation-only runs and prediction.

May import the network, data, reporting and the ground floor; never the run. Post-processing,
mAP and plots work on arrays: they import no network and no JAX.
"""
