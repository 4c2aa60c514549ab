"""BackTAL on ActivityNet1.2, with the official experiments/ActivityNet1.2.yaml values.

  python -m backtal_jax.main --config=configs/activitynet12.py --workdir=/tmp/backtal_anet
"""

import ml_collections

from configs import thumos


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """ActivityNet1.2 config: THUMOS14's with the official ActivityNet1.2 overrides."""
  if arg:
    raise ValueError(f'configs/activitynet12.py: unknown variant {arg!r}')
  config = thumos.get_config()
  config.model.num_classes = 100  # ActivityNet1.2 action classes
  config.model.topk_ratio = 0.6  # TOPK_K_R
  config.loss.separation_weight = 0.1  # C_LOSS_TOPK_BG
  config.loss.separation_fg = 'own_topk'  # fg score is its own top-k mean of cas_base
  config.loss.separation_topk_ratio = 0.2  # TOPK_K_R_FOR_LOSS
  config.data.dataset = 'activitynet12'  # dataset name, for logs
  config.data.train_split = 'training'  # DATASET.TRAIN_SPLIT
  config.data.test_split = 'validation'  # DATASET.VAL_SPLIT
  config.data.num_segments = 100  # DATASET.NUM_SEGMENTS
  config.data.tfds_name = 'backtal_features/activitynet12'  # TFDS dataset/config
  return config
