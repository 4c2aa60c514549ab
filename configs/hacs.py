"""BackTAL on HACS, with the official experiments/HACS.yaml values.

  python -m backtal_jax.main --config=configs/hacs.py --workdir=/tmp/backtal_hacs \
      --config.data.features_root=/data/HACS \
      --config.eval.ground_truth=/data/HACS/HACS_segments_v1.1.1.json
"""

import ml_collections

from configs import activitynet12


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """HACS config: ActivityNet1.2's (HACS.yaml shares its network, loss and splits) plus the
  HACS differences."""
  if arg:
    raise ValueError(f'configs/hacs.py: unknown variant {arg!r}')
  config = activitynet12.get_config()
  config.model.num_classes = 200  # HACS action classes (DATASET.CLS_NUM)
  config.data.dataset = 'hacs'  # dataset name, for logs
  config.data.num_segments = 200  # DATASET.NUM_SEGMENTS
  config.data.tfds_name = 'backtal_features/hacs'  # TFDS dataset/config
  config.eval.class_score_thresh = 0.075  # CLS_SCORE_TH
  config.eval.act_thresh_max = 0.2  # ACT_THRESH_MAX
  config.eval.outer_lambda = 200.0  # OUTER_LAMBDA
  config.eval.nms_thresh = 0.71  # NMS_THRESHOLD
  config.eval.ground_truth = ''  # not shipped: the official HACS_segments_v1.1.1.json (GT_FILE)
  config.train.learning_rate = 1e-4  # LR
  config.train.batch_size = 64  # BATCH_SIZE
  config.train.num_epochs = 8  # EPOCH_NUM
  return config
