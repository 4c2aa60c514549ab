"""The official optimiser: PyTorch's Adam with coupled L2 weight decay, constant learning rate."""

import ml_collections
import optax

from backtal_jax.core import fields

# config.train's optimiser fields (core/fields.py), checked before the first step
CONFIG_FIELDS = {
    'train.learning_rate': fields.number(0, low_open=True),
    'train.b1': fields.number(0, 1, high_open=True),
    'train.b2': fields.number(0, 1, high_open=True),
    'train.eps': fields.number(0, low_open=True),
    'train.weight_decay': fields.number(0),
}


def official_adam(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """torch.optim.Adam(lr, betas, eps, weight_decay): the decay is added to the gradient *before*
  the moments (unlike AdamW), and the bias-corrected step is lr * m / (sqrt(v) + eps)."""
  return optax.chain(
      optax.add_decayed_weights(train_config.weight_decay),
      optax.scale_by_adam(b1=train_config.b1, b2=train_config.b2, eps=train_config.eps),
      optax.scale(-train_config.learning_rate),
  )
