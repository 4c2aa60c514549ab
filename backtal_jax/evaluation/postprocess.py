"""Class activation sequences -> action detections, as the official BackTAL code computes them.

All of this runs on the host in numpy, one video at a time, vectorised over the confident
classes and the thresholds. The official behaviour is reproduced on purpose, including:

* the CAS is stretched from T snippets to `frame_num` positions with OpenCV's INTER_LINEAR
  resize (half-pixel centres, float32 weights, edge clamping), not with `np.interp`;
* a threshold whose only position above it is index 0 yields no proposal (the official
  `if any(position)`), unless `config.eval.keep_lone_first_position` is set;
* NMS measures a segment in seconds as `end - start + 1`;
* `fps` plays no part: segments are `index / frame_num * duration`.

Ties in NMS are broken as a stable sort would (the proposal made later ranks first), the same
rule `backtal_jax.evaluation.mean_ap` uses.
"""

from typing import Any
from typing import Sequence

import ml_collections
import numpy as np

from backtal_jax.core import fields
from backtal_jax.core import resample

# config.eval's post-processing fields (core/fields.py), checked before the first step. Scores,
# normalised CAS and feature magnitudes lie in [0, 1]; a step gives at most 1000 thresholds.
CONFIG_FIELDS = {
    'eval.class_score_thresh': fields.number(0, 1),
    'eval.act_thresh_min': fields.number(0, 1),
    'eval.act_thresh_max': fields.number(0, 1),
    'eval.act_thresh_step': fields.number(1e-3, 1),
    'eval.outer_lambda': fields.number(0),
    'eval.video_score_gamma': fields.number(0),
    'eval.nms_thresh': fields.number(0, 1),
    'eval.feature_proposals': fields.flag(),
    'eval.feature_thresh_min': fields.number(0, 1),
    'eval.feature_thresh_max': fields.number(0, 1),
    'eval.feature_thresh_step': fields.number(1e-3, 1),
    'eval.shrink_ratio': fields.number(0, 0.5, high_open=True),
    'eval.whole_video_proposals': fields.flag(),
    'eval.whole_video_score': fields.number(0),
    'eval.keep_lone_first_position': fields.flag(),
}


def threshold_problems(eval_config: ml_collections.ConfigDict) -> list[str]:
  """Each threshold range must hold at least one threshold, or no proposal is ever made."""
  problems = []
  ranges = [('act_thresh', cas_thresholds)] + (
      [('feature_thresh', feature_thresholds)] if eval_config.feature_proposals else [])
  for prefix, thresholds in ranges:
    if not len(thresholds(eval_config)):
      problems.append(f'config.eval.{prefix}_min ({eval_config[prefix + "_min"]}) is not below '
                      f'config.eval.{prefix}_max ({eval_config[prefix + "_max"]}): no threshold '
                      'in between, so no proposal')
  return problems


def minmax_over_time(x_T: np.ndarray) -> np.ndarray:
  """Min-max normalisation over the first axis with the minimum and maximum clipped at 0, as the
  official code does (so a signal above 0 everywhere does not reach 0); a flat one divides by 1."""
  max_ = np.maximum(x_T.max(axis=0), 0)
  min_ = np.maximum(x_T.min(axis=0), 0)
  delta = max_ - min_
  return (x_T - min_) / np.where(delta <= 0, 1, delta).astype(x_T.dtype)


def minmax_normalize_cas(cas_TxC1: np.ndarray) -> np.ndarray:
  """Per-class min-max normalisation over time."""
  return minmax_over_time(np.asarray(cas_TxC1, np.float32))


def feature_magnitudes(feature_TxH: np.ndarray) -> np.ndarray:
  """L2 norm of each snippet's feature, min-max normalised over time and clipped to [0, 1]."""
  feature_TxH = np.asarray(feature_TxH, np.float64)
  norm_T = np.sqrt(np.einsum('th,th->t', feature_TxH, feature_TxH)).astype(np.float32)
  return np.clip(minmax_over_time(norm_T), 0, 1)


def threshold_range(start: float, stop: float, step: float) -> np.ndarray:
  """The official thresholds: np.arange(start, stop, step), float64."""
  return np.arange(start, stop, step)


def cas_thresholds(eval_config: ml_collections.ConfigDict) -> np.ndarray:
  return threshold_range(eval_config.act_thresh_min, eval_config.act_thresh_max,
                         eval_config.act_thresh_step)


def feature_thresholds(eval_config: ml_collections.ConfigDict) -> np.ndarray:
  return threshold_range(eval_config.feature_thresh_min, eval_config.feature_thresh_max,
                         eval_config.feature_thresh_step)


def find_runs(mask_ARxL: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Maximal runs of True per row: (row, first, last) index arrays, row-major, in time order."""
  num_rows, length = mask_ARxL.shape
  padded = np.zeros((num_rows, length + 2), np.int8)
  padded[:, 1:-1] = mask_ARxL
  edges = np.diff(padded, axis=1)
  start_rows, starts = np.nonzero(edges == 1)
  _, stops = np.nonzero(edges == -1)
  return start_rows, starts, stops - 1


def drop_lone_first_position(mask_ARxL: np.ndarray) -> np.ndarray:
  """Clears rows whose only True is at index 0: the official `if any(position)` skips them."""
  lone_first_AR = mask_ARxL[:, 0] & (mask_ARxL.sum(axis=1) == 1)
  return mask_ARxL & ~lone_first_AR[:, None]


def contrast_scores(values_ARxL: np.ndarray, rows: np.ndarray, firsts: np.ndarray,
                    lasts: np.ndarray, outer_lambda: float) -> np.ndarray:
  """Mean inside each run minus mean of its outer margins (lambda x run length on each side).

  The margins follow the official ranges: [trunc(first - lambda*n), first) clipped at 0 on the
  left and [last + 1, trunc(last + lambda*n)) clipped at the sequence end on the right.
  Returned in float32, as the official float32 means.
  """
  length = values_ARxL.shape[1]
  prefix_ARxL1 = np.zeros((values_ARxL.shape[0], length + 1), np.float64)
  np.cumsum(values_ARxL, axis=1, dtype=np.float64, out=prefix_ARxL1[:, 1:])
  prefix = prefix_ARxL1.ravel()
  row_offset = rows * (length + 1)
  size = lasts - firsts + 1
  outer_begin = np.maximum(np.trunc(firsts - outer_lambda * size), 0).astype(np.int64)
  outer_end = np.minimum(np.trunc(lasts + outer_lambda * size), length).astype(np.int64)
  outer_end = np.maximum(outer_end, lasts + 1)
  # Prefix sums at, per run: outer begin, first, last + 1, outer end.
  at_4xQ = prefix[row_offset + np.stack([outer_begin, firsts, lasts + 1, outer_end])]
  inner = ((at_4xQ[2] - at_4xQ[1]) / size).astype(np.float32)
  outer_count = (firsts - outer_begin) + (outer_end - lasts - 1)
  outer_sum = (at_4xQ[1] - at_4xQ[0]) + (at_4xQ[3] - at_4xQ[2])
  outer = np.where(outer_count > 0, outer_sum / np.maximum(outer_count, 1), 0)
  return inner - outer.astype(np.float32)


def nms_1d(scores: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           threshold: float) -> np.ndarray:
  """Greedy NMS with the official `end - start + 1` length; returns kept indices, best first.

  Ties in score: the proposal listed later ranks first (stable sort, then reversed).
  """
  order = np.argsort(scores, kind='stable')[::-1]
  lengths = ends - starts + 1
  keep = []
  while order.size:
    best, rest = order[0], order[1:]
    keep.append(best)
    inter = np.maximum(0.0, np.minimum(ends[best], ends[rest])
                       - np.maximum(starts[best], starts[rest]) + 1)
    iou = inter / (lengths[best] + lengths[rest] - inter)
    order = rest[iou < threshold]
  return np.asarray(keep, np.int64)


def class_proposal_masks(scores_LxA: np.ndarray, magnitudes_L: np.ndarray,
                         eval_config: ml_collections.ConfigDict):
  """Masks [A, R, L] of the positions kept at each threshold, and the values scored on them.

  CAS thresholds zero what lies below them and score the thresholded CAS; feature-magnitude
  thresholds select positions by magnitude and score the plain (resized) CAS.
  """
  cas_R = cas_thresholds(eval_config)
  scores_AxL = scores_LxA.T
  values = np.where(scores_AxL[:, None, :] >= cas_R[None, :, None],
                    scores_AxL[:, None, :], np.float32(0))
  masks = values > 0
  if eval_config.feature_proposals:
    feat_thresholds = feature_thresholds(eval_config)
    feat_mask_RxL = (magnitudes_L[None, :] >= feat_thresholds[:, None]) & (magnitudes_L > 0)
    num_classes = scores_AxL.shape[0]
    masks = np.concatenate(
        [masks, np.broadcast_to(feat_mask_RxL, (num_classes,) + feat_mask_RxL.shape)], axis=1)
    values = np.concatenate(
        [values, np.broadcast_to(scores_AxL[:, None, :],
                                 (num_classes, len(feat_thresholds), scores_AxL.shape[1]))],
        axis=1)
  return masks, values


def shrink_segments(starts: np.ndarray, ends: np.ndarray, ratio: float):
  """Moves both ends inwards by `ratio` of the segment length (ActivityNet/HACS setting)."""
  length = ends - starts
  return starts + length * ratio, ends - length * ratio


def proposal_signals(cas_TxC1: np.ndarray, feature_TxH: np.ndarray, classes: Sequence[int], *,
                     frame_num: int, eval_config: ml_collections.ConfigDict):
  """The arrays the thresholds are applied to: the min-max normalised CAS of `classes` and the
  feature magnitude (None without feature proposals), both stretched to `frame_num` positions.

  detect_video and the plots both call this, so a plot shows exactly what made each proposal.
  """
  cas_TxA = minmax_normalize_cas(cas_TxC1)[:, np.asarray(classes, np.int64)]
  scores_LxA = resample.linear_resize(cas_TxA, frame_num)
  magnitudes_L = None
  if eval_config.feature_proposals:
    magnitudes_L = resample.linear_resize(feature_magnitudes(feature_TxH)[:, None], frame_num)[:, 0]
  return scores_LxA, magnitudes_L


def detect_video(cas_TxC1: np.ndarray, video_scores_C1: np.ndarray, feature_TxH: np.ndarray, *,
                 frame_num: int, duration: float, class_names: Sequence[str],
                 config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Detections of one video in the ActivityNet results format, as the official code makes them.
  Arguments as for `detections_and_sources`."""
  return detections_and_sources(cas_TxC1, video_scores_C1, feature_TxH, frame_num=frame_num,
                                duration=duration, class_names=class_names, config=config)[0]


def proposal_sources(eval_config: ml_collections.ConfigDict) -> list[str]:
  """What made the proposals of each threshold row of `class_proposal_masks`, in its order."""
  sources = [f'CAS >= {t:.3g}' for t in cas_thresholds(eval_config)]
  if eval_config.feature_proposals:
    sources += [f'magnitude >= {t:.3g}' for t in feature_thresholds(eval_config)]
  return sources


def detections_and_sources(cas_TxC1: np.ndarray, video_scores_C1: np.ndarray,
                           feature_TxH: np.ndarray, *, frame_num: int, duration: float,
                           class_names: Sequence[str], config: ml_collections.ConfigDict
                           ) -> tuple[list[dict[str, Any]], list[str]]:
  """`detect_video`'s detections, and beside each the proposal that made it: a class's CAS
  threshold, a class-agnostic feature-magnitude threshold, or the whole video (for plots).

  Args:
    cas_TxC1: raw class activation sequence [T, C+1] (last column: background).
    video_scores_C1: softmaxed video scores [C+1].
    feature_TxH: feature_supp_1 [T, H], used for the feature-magnitude proposals.
    frame_num: number of positions the CAS is stretched to (the npz's `frame_num`).
    duration: video duration in seconds.
    class_names: index -> class name (the ground truth's `activity_list`).
    config: the full config; reads `config.eval`.
  """
  eval_config = config.eval
  frame_num = int(frame_num)
  video_scores_C = np.asarray(video_scores_C1, np.float32)[:-1]
  confident = np.nonzero(video_scores_C >= np.float32(eval_config.class_score_thresh))[0]
  if confident.size == 0 or frame_num <= 0:
    return [], []
  scores_LxA, magnitudes_L = proposal_signals(cas_TxC1, feature_TxH, confident,
                                               frame_num=frame_num, eval_config=eval_config)
  masks_AxRxL, values_AxRxL = class_proposal_masks(scores_LxA, magnitudes_L, eval_config)
  num_rows = masks_AxRxL.shape[1]
  masks_ARxL = masks_AxRxL.reshape(-1, frame_num)
  if not eval_config.keep_lone_first_position:
    masks_ARxL = drop_lone_first_position(masks_ARxL)
  rows, firsts, lasts = find_runs(masks_ARxL)
  values_ARxL = values_AxRxL.reshape(-1, frame_num)
  gamma = np.float32(eval_config.video_score_gamma)
  scores = (contrast_scores(values_ARxL, rows, firsts, lasts, eval_config.outer_lambda)
            + gamma * video_scores_C[confident][rows // num_rows]).astype(np.float64)
  starts = firsts / frame_num * duration
  ends = (lasts + 1) / frame_num * duration
  starts, ends = shrink_segments(starts, ends, eval_config.shrink_ratio)
  class_of_proposal = rows // num_rows
  whole_video_score = (eval_config.whole_video_score if eval_config.whole_video_proposals
                       else None)
  nms_thresh = eval_config.nms_thresh
  row_sources = proposal_sources(eval_config)
  detections, sources = [], []
  for k, class_id in enumerate(confident):
    members = np.nonzero(class_of_proposal == k)[0]
    if members.size == 0:
      continue
    class_scores, class_starts, class_ends = scores[members], starts[members], ends[members]
    class_sources = [row_sources[r] for r in rows[members] % num_rows]
    if whole_video_score is not None:
      class_scores = np.concatenate([class_scores, [whole_video_score]])
      class_starts = np.concatenate([class_starts, [0.0]])
      class_ends = np.concatenate([class_ends, [float(duration)]])
      class_sources.append('whole video')
    kept = nms_1d(class_scores, class_starts, class_ends, nms_thresh)
    name = class_names[class_id]
    detections.extend(
        {'label': name, 'segment': [float(class_starts[i]), float(class_ends[i])],
         'score': float(class_scores[i])} for i in kept)
    sources.extend(class_sources[i] for i in kept)
  return detections, sources
