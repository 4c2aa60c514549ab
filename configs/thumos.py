"""BackTAL on THUMOS14, with the official experiments/THUMOS14.yaml values.

  python -m backtal_jax.main --config=configs/thumos.py --workdir=/tmp/backtal_thumos \
      --config.data.features_root=/data/THUMOS14

Variants (the part after the colon):
  configs/thumos.py:synthetic  the semi-synthetic testbed (built on first use), CPU-sized widths
  configs/thumos.py:debug      a few tiny synthetic videos for two epochs, for tests and smoke runs
"""

import ml_collections

from backtal_jax.data import synthetic


def get_model_config() -> ml_collections.ConfigDict:
  """The BackTAL network: fields of backtal_jax.model.network.BackTAL."""
  model = ml_collections.ConfigDict()
  model.num_classes = 20  # action classes; the CAS has one more, the background
  model.feat_dim = 2048  # input width: RGB and flow I3D features, 1024 each
  model.hidden_dim = 2048  # width of the two affinity convolutions of the base module
  model.filter_dim = 512  # hidden width of the filter module (foreground weights)
  model.embed_hidden_dim = 512  # hidden width of the embedding module
  model.embed_dim = 32  # width of the L2-normalised embedding used by the affinity
  model.topk_ratio = 0.125  # video score = mean of the top int(T * ratio) CAS values
  model.dropout_rate = 0.7  # dropout after the second affinity convolution
  model.affinity = 'official'  # 'official' (bit-for-bit the released code) or 'paper'
  model.dtype = 'float32'  # 'float32' or 'bfloat16' (the base module only); params stay float32
  model.affinity_kernel = 'auto'  # 'auto' (fused Pallas kernel on TPUs, XLA elsewhere), 'xla', or
  # 'pallas' (the kernel everywhere; interpreted off TPUs: slow, for tests); float64 takes XLA
  return model


def get_loss_config() -> ml_collections.ConfigDict:
  """Weights and settings of backtal_jax.model.losses.backtal_loss."""
  loss = ml_collections.ConfigDict()
  loss.norm_weight = 1e-4  # weight of the L1 norm of fore_weights (C_LOSS_NORM)
  loss.click_weight = 1.0  # weight of the click cross-entropy on cas_base
  loss.separation_weight = 1.0  # weight of the score separation term (C_LOSS_TOPK_BG)
  loss.embedding_weight = 0.8  # weight of the embedding hinge loss (official C_LOSS_EMBEDDING)
  loss.separation_fg = 'video_score'  # 'video_score' (THUMOS14) or 'own_topk' (ActivityNet, HACS)
  loss.separation_topk_ratio = 0.125  # top-k ratio of the 'own_topk' fg score (TOPK_K_R_FOR_LOSS)
  loss.similar_min = 0.5  # fg-fg and bg-bg cosine similarity must reach this (TH_SIMILAR_MIN)
  loss.different_max = 0.1  # fg-bg cosine similarity must stay below this (TH_DIFFERENT_MAX)
  return loss


def get_data_config() -> ml_collections.ConfigDict:
  """Where the features are and how batches are drawn: backtal_jax.data.pipeline."""
  data = ml_collections.ConfigDict()
  data.dataset = 'thumos14'  # dataset name, for logs
  data.source = 'npz'  # 'npz': official files; 'tfds': ArrayRecord; 'synthetic': built testbed
  data.features_root = ml_collections.config_dict.placeholder(str)  # dir of <split>/*.npz files
  # (source='synthetic': where the testbed is built; unset: WORKDIR/synthetic_data)
  data.train_split = 'val'  # official training split (DATASET.TRAIN_SPLIT)
  data.test_split = 'test'  # official test split (DATASET.VAL_SPLIT)
  data.num_segments = 750  # T, snippets per video (DATASET.NUM_SEGMENTS)
  data.feature_dim = 2048  # F, RGB and flow I3D features, 1024 each (NETWORK.FEAT_DIM)
  data.tfds_name = 'backtal_features/thumos14'  # TFDS dataset/config (tfds source)
  data.tfds_data_dir = ml_collections.config_dict.placeholder(str)  # unset: TFDS's default dir
  data.frames_per_snippet = 16  # video frames per I3D snippet: frame_num = duration * fps / 16
  data.synthetic = synthetic.default_config('thumos14')  # testbed knobs (source='synthetic')
  data.shuffle_seed = 0  # per-epoch order = permutation seeded by (shuffle_seed, epoch)
  data.prefetch = 2  # host batches read ahead by a background thread (0: none)
  data.readers = 4  # threads reading the videos of a streamed batch
  data.resident = 'auto'  # training split on the devices, batches gathered in the step:
  # 'auto' (when it takes at most resident_max_gb), 'always' or 'never' (stream from the files)
  data.resident_max_gb = 6.0  # 'auto': largest split kept on (every one of) the devices, in GB
  return data
def get_eval_config() -> ml_collections.ConfigDict:
  """Post-processing and mAP settings (TEST section of experiments/THUMOS14.yaml)."""
  ev = ml_collections.ConfigDict()
  ev.class_score_thresh = 0.25  # localise classes whose video score reaches this (CLS_SCORE_TH)
  ev.act_thresh_min = 0.0  # CAS thresholds are np.arange(min, max, step) (ACT_THRESH_MIN)
  ev.act_thresh_max = 0.25  # exclusive upper end of the CAS thresholds (ACT_THRESH_MAX)
  ev.act_thresh_step = 0.025  # step of the CAS thresholds (ACT_THRESH_STEP)
  ev.outer_lambda = 0.25  # outer margin per side, in proposal lengths (OUTER_LAMBDA)
  ev.video_score_gamma = 0.2  # weight of the video score added to the contrast score (CONF_GAMMA)
  ev.nms_thresh = 0.55  # NMS drops proposals overlapping a better one this much
  ev.feature_proposals = True  # also threshold feature_supp_1 norms (THUMOS14)
  ev.feature_thresh_min = 0.3  # feature-magnitude thresholds are np.arange(min, max, step)
  ev.feature_thresh_max = 0.8  # exclusive upper end of the feature-magnitude thresholds
  ev.feature_thresh_step = 0.075  # step of the feature-magnitude thresholds
  ev.shrink_ratio = 0.0  # fraction of its length cut at both ends of a proposal
  ev.whole_video_proposals = False  # add a [0, duration] proposal per class (ActivityNet/HACS)
  ev.whole_video_score = 0.6  # score of that whole-video proposal
  ev.keep_lone_first_position = False  # True: keep a proposal made of index 0 alone (quirk 4)
  ev.ground_truth = 'thumos14_gt'  # shipped annotation name or a path to a ground-truth JSON
  ev.subset = 'test'  # ground-truth subset scored by detection mAP
  ev.tiou_thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # mAP tIoUs (IOU_TH)
  ev.batch_size = 8  # videos per evaluation batch (global; a multiple of the device count)
  ev.every_epochs = 1  # evaluate on the selection split every this many epochs (EVAL_INTERVAL)
  ev.num_plots = 4  # PNG plots of this many test videos after the final evaluation
  ev.plot_videos = ()  # plot these videos (names) at every evaluation of a split holding them
  ev.only = False  # evaluate a checkpoint on the test split instead of training
  ev.checkpoint = ml_collections.config_dict.placeholder(str)  # with only: orbax folder or .pth
  # (unset: WORKDIR/best)
  return ev


def get_train_config() -> ml_collections.ConfigDict:
  """Optimisation and the training loop (TRAIN section of experiments/THUMOS14.yaml)."""
  train = ml_collections.ConfigDict()
  train.seed = 38  # parameter initialisation, dropout and held-out split (BASIC.SEED)
  train.learning_rate = 1e-4  # constant, no schedule (LR)
  train.b1 = 0.9  # Adam beta1 (BETAS)
  train.b2 = 0.999  # Adam beta2 (BETAS)
  train.eps = 1e-8  # Adam epsilon (PyTorch's default)
  train.weight_decay = 5e-4  # L2 added to the gradient before Adam, as torch Adam (WEIGHT_DECAY)
  train.batch_size = 16  # global batch: a multiple of the device count (BATCH_SIZE)
  train.num_epochs = 40  # passes over the training videos (EPOCH_NUM)
  train.supervision = 'background'  # clicks used: 'none', 'background' (BackTAL), 'action', 'both'
  train.action_clicks = 'simulated'  # with action/both: 'simulated' from the ground truth, or
  # 'file': the point_label's own action clicks (imported from the annotation page)
  train.selection_split = 'test'  # picks the best epoch: 'test' (official) or 'heldout'
  train.heldout_fraction = 0.1  # share of training videos held out with selection_split='heldout'
  train.selection_metric = 'map@0.5'  # 'map@X' or 'average' (official: THUMOS14 mAP@0.5)
  train.log_every_steps = 10  # fetch, check and log the metrics (and heed SIGTERM) this often
  train.progress_every_seconds = 60.0  # a progress line inside an epoch this often (at most)
  train.max_checkpoints_to_keep = 2  # latest checkpoints kept for resuming (the best is apart)
  train.debug_transfer_guard = False  # True: implicit host/device copies in the step are errors
  return train


def use_synthetic(config: ml_collections.ConfigDict) -> None:
  """The semi-synthetic testbed (recipe D, backtal_jax/data/synthetic.py), CPU-friendly widths."""
  config.data.source = 'synthetic'  # build the testbed, then read it as official npz files
  config.data.synthetic.half_width = 64  # RGB and flow halves of 64 channels
  config.model.feat_dim = config.data.synthetic.get_ref('half_width') * 2  # data's width too
  config.model.hidden_dim = 128  # affinity convolutions
  config.model.filter_dim = 64  # filter module
  config.model.embed_hidden_dim = 64  # embedding module, hidden layer
  config.eval.class_score_thresh = 0.1  # recipe D shows the paper's effect at 0.1 (README)


def use_debug(config: ml_collections.ConfigDict) -> None:
  """A few tiny synthetic videos for two epochs: for tests and smoke runs, not for numbers."""
  use_synthetic(config)
  config.data.num_segments = 64  # T (the built files' too: one reference)
  config.data.synthetic.half_width = 8  # tiny features (input width 16)
  config.data.synthetic.num_train_videos = 24  # first 24 training videos by name
  config.data.synthetic.num_test_videos = 8  # first 8 test videos by name
  config.data.prefetch = 0  # read in the main thread
  config.model.hidden_dim = 16  # affinity convolutions
  config.model.filter_dim = 8  # filter module
  config.model.embed_hidden_dim = 8  # embedding module, hidden layer
  config.model.embed_dim = 8  # embedding
  config.train.batch_size = 8  # three steps per epoch (the last padded)
  config.train.num_epochs = 2  # two epochs
  config.train.log_every_steps = 2  # log often
  config.eval.batch_size = 4  # evaluation batch
  config.eval.num_plots = 1  # one plot


VARIANTS = {'': lambda config: None, 'synthetic': use_synthetic, 'debug': use_debug}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """THUMOS14 config; `arg` picks a variant: '', 'synthetic' or 'debug'."""
  if arg not in VARIANTS:
    raise ValueError(f'configs/thumos.py: unknown variant {arg!r}; known: {sorted(VARIANTS)}')
  config = ml_collections.ConfigDict()
  config.model = get_model_config()  # the network
  config.loss = get_loss_config()  # loss weights and thresholds
  config.data = get_data_config()  # features and batches
  config.eval = get_eval_config()  # post-processing and mAP
  config.train = get_train_config()  # optimisation and the loop
  tie_linked_fields(config)
  VARIANTS[arg](config)
  return config


def tie_linked_fields(config: ml_collections.ConfigDict) -> None:
  """Fields that must agree share one FieldReference, so that one override moves both: the
  input width of the data and of the model, and T of the data and of the testbed it builds."""
  config.data.feature_dim = config.model.get_ref('feat_dim')  # F of the files = the model's input
  config.data.synthetic.num_segments = config.data.get_ref('num_segments')  # T built = T read
