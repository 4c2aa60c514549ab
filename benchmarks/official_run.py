"""The official BackTAL training flow (VividLe/BackTAL @ 17161fc), run out of tree on the CPU.

benchmarks/side_by_side.py starts this in a fresh process, so that its wall time counts what a
user of `python tools/train.py -dataset THUMOS14` waits for: the interpreter, PyTorch's import,
the official modules and the whole run. Nothing of the official code is copied: the checkout's
`tools/train.py` is imported as it runs (it sets CUDA_VISIBLE_DEVICES=0 and OMP_NUM_THREADS=1
before PyTorch loads, and puts `lib/` on sys.path), and its main() is followed step by step with
its own functions: update_config(experiments/THUMOS14.yaml), prepare_env (seed 38), its
BackTALDataset and DataLoaders, Network, Adam, BackTALLoss, core.train_eval.train per epoch with
the SummaryWriter's scalars, then core.train_eval.evaluate (its post-processing), its
post_process (evaluate_mAP: the ActivityNet evaluator) and the best model's .pth and .txt.

Runtime patches, all made here and nowhere in the checkout:
1. `torch.Tensor.cuda` returns the tensor itself: BackTALLoss calls `.cuda()` unconditionally;
   `model.cuda()` is not called (CPU run).
2. The widths: the official layers hard-code hidden 2048, filter 512 and embedding hidden 512;
   after `Network(cfg)` is built (seeded, as the official code builds it) each hard-coded layer
   is replaced by a freshly initialised one of the same type at the testbed's widths (input 128,
   hidden 128, filter 64, embedding hidden 64, embedding 32), as the reference fixtures did
   (shared/fixtures/reference/README.md), and the two AttentionConv1d's `out_channels` follow.
3. Config values (not code): NETWORK.FEAT_DIM = input width, TEST.CLS_SCORE_TH = the synthetic
   config's class-score threshold (0.1), TRAIN.EPOCH_NUM = --epochs and TEST.EVAL_INTERVAL =
   --epochs (evaluated once, at the end); DATASET.DATA_DIR = the testbed, DATASET.GT_FILE = the
   checkout's ground truth, BASIC.ROOT_DIR = --out_dir (outputs outside the checkout), and
   BASIC.BACKUP_CODES = False (it copies ROOT_DIR/lib, which is no longer the checkout).
4. main()'s loop is driven here rather than called: with TEST.EVAL_INTERVAL > 1 its per-epoch
   "Best performance" print reads variables set only by an evaluation, a NameError at epoch 1.
   The loop body is main()'s, with its functions, in its order.
5. --threads (optional) calls torch.set_num_threads after the import; by default PyTorch keeps
   the OMP_NUM_THREADS=1 that tools/train.py sets.
6. `numpy.float`, removed in NumPy 1.24 and used by the official evaluator's
   compute_average_precision_detection (its environment.yaml pins an older NumPy), is restored as
   what it was, the builtin float, here and, through joblib's loky initializer, in the evaluator's
   worker processes.

Writes --result_json: the mAP per tIoU of the official evaluator, the torch version and thread
count, and the seconds of its own phases.

  python -m benchmarks.official_run --repo=/tmp/official --features_root=/tmp/testbed \
      --out_dir=/tmp/official_out --result_json=/tmp/official.json
"""

import importlib.util
import json
import os
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('repo', None, 'Root of an official BackTAL checkout.', required=True)
  flags.DEFINE_string('features_root', None, 'Folder holding val/ and test/.', required=True)
  flags.DEFINE_string('out_dir', None, 'Where the official outputs go.', required=True)
  flags.DEFINE_string('result_json', None, 'Write the mAP and phases here.', required=True)
  flags.DEFINE_integer('epochs', 40, 'Training epochs (TRAIN.EPOCH_NUM, TEST.EVAL_INTERVAL).')
  flags.DEFINE_integer('feat_dim', 128, 'Input width (NETWORK.FEAT_DIM).')
  flags.DEFINE_integer('hidden_dim', 128, 'Base module width (official: 2048).')
  flags.DEFINE_integer('filter_dim', 64, 'Filter module hidden width (official: 512).')
  flags.DEFINE_integer('embed_hidden_dim', 64, 'Embedding module hidden width (official: 512).')
  flags.DEFINE_integer('embed_dim', 32, 'Embedding width (official: 32).')
  flags.DEFINE_float('class_score_thresh', 0.1, 'TEST.CLS_SCORE_TH.')
  flags.DEFINE_integer('threads', 0, "torch.set_num_threads(N); 0 keeps tools/train.py's "
                       'OMP_NUM_THREADS=1.')


def import_official_train(repo: str):
  """tools/train.py as a module: its top sets the environment and imports the official lib/."""
  sys.path.insert(0, os.path.join(repo, 'tools'))
  spec = importlib.util.spec_from_file_location('official_train', os.path.join(repo, 'tools',
                                                                               'train.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def restore_numpy_float() -> None:
  """Patch 6 (also the loky workers' initializer)."""
  import numpy  # pylint: disable=g-import-not-at-top
  numpy.float = float


def patch_cuda(torch) -> None:
  """Patch 1: `.cuda()` on a tensor is the tensor (CPU run)."""
  torch.Tensor.cuda = lambda self, *args, **kwargs: self


def configure(cfg, args) -> None:
  """Patch 3, and the paths main() sets, with ROOT_DIR moved out of the checkout."""
  cfg.NETWORK.FEAT_DIM = args.feat_dim
  cfg.TEST.CLS_SCORE_TH = args.class_score_thresh
  cfg.TRAIN.EPOCH_NUM = args.epochs
  cfg.TEST.EVAL_INTERVAL = args.epochs
  cfg.DATASET.DATA_DIR = os.path.abspath(args.features_root)
  cfg.DATASET.GT_FILE = os.path.join(os.path.abspath(args.repo), cfg.DATASET.GT_FILE)
  cfg.BASIC.BACKUP_CODES = False
  cfg.BASIC.LOG_DIR = os.path.join(cfg.BASIC.CKPT_DIR, cfg.BASIC.TIME + cfg.BASIC.SUFFIX, 'log')
  cfg.BASIC.BACKUP_DIR = os.path.join(cfg.BASIC.CKPT_DIR, cfg.BASIC.TIME + cfg.BASIC.SUFFIX,
                                      'codes_backup')
  cfg.TEST.RESULT_DIR = os.path.join(cfg.BASIC.CKPT_DIR, cfg.BASIC.TIME + cfg.BASIC.SUFFIX,
                                     'results')
  cfg.BASIC.ROOT_DIR = os.path.abspath(args.out_dir)


def swap_widths(model, nn, args, num_classes: int) -> None:
  """Patch 2: the hard-coded layers at the testbed's widths, same types and options."""
  model.filter_module.conv_1[0] = nn.Conv1d(args.feat_dim, args.filter_dim, 1)
  model.filter_module.conv_2[0] = nn.Conv1d(args.filter_dim, 1, 1)
  base = model.base_module
  base.conv_1 = nn.Conv1d(args.feat_dim, args.hidden_dim, 3, padding=1, bias=False)
  base.conv_1_att.out_channels = args.hidden_dim
  base.conv_2 = nn.Conv1d(args.hidden_dim, args.hidden_dim, 3, padding=1, bias=False)
  base.conv_2_att.out_channels = args.hidden_dim
  model.classifier_module.conv = nn.Conv1d(args.hidden_dim, num_classes + 1, 1, bias=False)
  model.embedding_module.conv_1 = nn.Conv1d(args.feat_dim, args.embed_hidden_dim, 3, padding=1)
  model.embedding_module.conv_2 = nn.Conv1d(args.embed_hidden_dim, args.embed_dim, 3, padding=1)


def main(argv) -> None:
  del argv
  args = FLAGS
  phases = {}
  started = time.perf_counter()
  official = import_official_train(args.repo)  # sets OMP_NUM_THREADS=1, imports torch and lib/
  import joblib  # pylint: disable=g-import-not-at-top  (the official evaluator's pool)
  import torch  # pylint: disable=g-import-not-at-top  (after train.py set OMP_NUM_THREADS)
  from torch import nn  # pylint: disable=g-import-not-at-top
  cfg = official.cfg
  if args.threads:
    torch.set_num_threads(args.threads)
  patch_cuda(torch)
  restore_numpy_float()
  phases['imports'] = time.perf_counter() - started

  mark = time.perf_counter()
  official.update_config(os.path.join(args.repo, 'experiments', 'THUMOS14.yaml'))
  configure(cfg, args)
  official.prepare_env(cfg)
  writer = official.SummaryWriter(log_dir=os.path.join(cfg.BASIC.ROOT_DIR, cfg.BASIC.LOG_DIR))
  train_dset = official.BackTALDataset(cfg, cfg.DATASET.TRAIN_SPLIT)
  train_loader = official.DataLoader(train_dset, batch_size=cfg.TRAIN.BATCH_SIZE, shuffle=True,
                                     num_workers=cfg.BASIC.WORKERS,
                                     pin_memory=cfg.BASIC.PIN_MEMORY)
  val_dset = official.BackTALDataset(cfg, cfg.DATASET.VAL_SPLIT)
  val_loader = official.DataLoader(val_dset, batch_size=cfg.TEST.BATCH_SIZE, shuffle=False,
                                   num_workers=cfg.BASIC.WORKERS, pin_memory=cfg.BASIC.PIN_MEMORY)
  model = official.Network(cfg)
  swap_widths(model, nn, args, cfg.DATASET.CLS_NUM)
  optimizer = official.optim.Adam(model.parameters(), lr=cfg.TRAIN.LR, betas=cfg.TRAIN.BETAS,
                                  weight_decay=cfg.TRAIN.WEIGHT_DECAY)
  criterion = official.BackTALLoss(cfg)
  phases['setup'] = time.perf_counter() - mark

  best_mAP, info = -1, None
  phases['train'] = phases['evaluation'] = 0.0
  for epoch in range(1, cfg.TRAIN.EPOCH_NUM + 1):
    mark = time.perf_counter()
    print('Epoch: %d:' % epoch)
    averages = official.train(cfg, train_loader, model, optimizer, criterion)
    for name, value in zip(('loss_average', 'loss_base_average', 'loss_supp_average',
                            'loss_norm_average'), averages):
      writer.add_scalar(name + '/train', value, epoch)
      if cfg.BASIC.VERBOSE:
        print('%s %f' % (name, value))
    phases['train'] += time.perf_counter() - mark
    if epoch % cfg.TEST.EVAL_INTERVAL == 0:
      mark = time.perf_counter()
      actions_json_file = official.evaluate(cfg, val_loader, model, epoch)
      with joblib.parallel_config(backend='loky', initializer=restore_numpy_float):
        best_mAP, info, flag_best = official.post_process(cfg, actions_json_file, best_mAP,
                                                          epoch)
      if flag_best:
        results = os.path.join(cfg.BASIC.ROOT_DIR, cfg.TEST.RESULT_DIR)
        official.save_best_record_txt(cfg, info, os.path.join(results, 'THUMOS14.txt'))
        official.save_best_model(cfg, epoch=epoch, model=model,
                                 file_path=os.path.join(results, 'THUMOS14.pth'))
      phases['evaluation'] += time.perf_counter() - mark
  writer.close()
  _, average_map, map_per_tiou = info
  with open(args.result_json, 'w') as f:
    json.dump({'tiou': [float(t) for t in cfg.TEST.IOU_TH],
               'mAP': [float(m) for m in map_per_tiou], 'average_mAP_0.1:0.9': float(average_map),
               'epoch': info[0], 'torch': torch.__version__,
               'torch_threads': torch.get_num_threads(), 'phase_seconds': phases}, f, indent=1)


if __name__ == '__main__':
  define_flags()
  app.run(main)
