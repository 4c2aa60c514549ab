"""BackTAL on ActivityNet1.2, with the official experiments/ActivityNet1.2.yaml values.

  python -m backtal_jax.main --config=configs/activitynet12.py --workdir=/tmp/backtal_anet \
      --config.data.features_root=/data/ActivityNet1.2

Variant configs/activitynet12.py:synthetic: the semi-synthetic ActivityNet1.2 testbed (simulated
background clicks), CPU-sized widths.
"""

import ml_collections

from backtal_jax.data import synthetic
from configs import thumos


def use_synthetic(config: ml_collections.ConfigDict) -> None:
  thumos.use_synthetic(config)  # the ActivityNet1.2 testbed knobs are set by get_config


VARIANTS = {'': lambda config: None, 'synthetic': use_synthetic}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """ActivityNet1.2 config: THUMOS14's with the official ActivityNet1.2 overrides."""
  if arg not in VARIANTS:
    raise ValueError(f'configs/activitynet12.py: unknown variant {arg!r}; '
                     f'known: {sorted(VARIANTS)}')
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
  config.eval.class_score_thresh = 0.1  # CLS_SCORE_TH
  config.eval.act_thresh_max = 0.15  # ACT_THRESH_MAX
  config.eval.outer_lambda = 20.0  # OUTER_LAMBDA
  config.eval.video_score_gamma = 0.6  # CONF_GAMMA
  config.eval.nms_thresh = 0.7  # NMS_THRESHOLD
  config.eval.feature_proposals = False  # no feature-magnitude proposals outside THUMOS14
  config.eval.shrink_ratio = 0.02  # proposals shrunk by 2% of their length at both ends
  config.eval.whole_video_proposals = True  # plus one whole-video proposal per class
  config.eval.subset = 'validation'  # ActivityNet1.2 is scored on its validation subset
  config.eval.tiou_thresholds = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)  # IOU_TH
  config.eval.ground_truth = 'activitynet12_gt'  # shipped ActivityNet1.2 ground truth
  config.train.seed = 5  # BASIC.SEED
  config.train.learning_rate = 2e-4  # LR
  config.train.batch_size = 128  # BATCH_SIZE
  config.train.num_epochs = 25  # EPOCH_NUM
  config.train.selection_metric = 'average'  # official: average mAP over 0.5:0.95
  config.eval.batch_size = 32  # videos per evaluation batch
  config.data.synthetic.update(synthetic.default_config('activitynet12'))  # testbed knobs
  VARIANTS[arg](config)
  return config
