"""The config fields the run itself reads (run/train.py's loop, run/evaluate_only.py): what each
may hold (core/fields.py). They live here rather than in those modules because the pre-flight,
which both of them call, collects every declaration."""

from backtal_jax.core import fields

CONFIG_FIELDS = {
    'train.seed': fields.integer(0),
    'train.batch_size': fields.integer(1),
    'train.num_epochs': fields.integer(1),
    'train.selection_metric': fields.text(nonempty=True),  # evaluator.selection_metric_problems
    'train.log_every_steps': fields.integer(1),
    'train.progress_every_seconds': fields.number(0),
    'train.max_checkpoints_to_keep': fields.integer(1),
    'train.debug_transfer_guard': fields.flag(),
    'eval.every_epochs': fields.integer(1),
    'eval.only': fields.flag(),
    'eval.checkpoint': fields.text(optional=True),
}
