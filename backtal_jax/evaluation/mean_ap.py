"""ActivityNet detection mAP, with the numbers of the official evaluator, in vectorised numpy.

Protocol: for each class of the subset's ground truth, predictions are ranked by descending score;
each one in turn is matched to the unmatched ground-truth instance of its video with the highest
tIoU, if that tIoU reaches the threshold (else it is a false positive); AP is the all-point
interpolated area under the precision/recall curve; mAP is the mean over the subset's classes.

Ties follow the official ranking done with a stable sort, `argsort(kind='stable')[::-1]`:
among predictions of one class with equal scores, the one listed later in the predictions file
ranks first; among ground-truth instances with equal tIoU to a prediction, the one listed later in
the ground-truth file is tried first. (The official code uses NumPy's default, unstable sort, so
its own result on ties moves with the NumPy version.) A tIoU of 0/0 (a zero-length prediction
against a zero-length ground truth) is NaN and, as in the official code, ranks first and passes
every threshold.

Matching only ever involves one (video, class) pair at a time, so it runs as one loop over the
rank of a prediction inside its pair, vectorised over all pairs and all thresholds.

Differences from the official evaluator, none of which changes a valid result: a prediction whose
label is a class of the ground-truth file absent from the subset is ignored (the official code
stops with a KeyError); malformed input gives one UserError (a ValueError) naming the file and the
video.
"""

import json
import math
import os
from typing import Any
from typing import Mapping
from typing import Sequence
from typing import Union

import numpy as np

from backtal_jax.core import errors
from backtal_jax.data.annotations import valid_segment

JsonSource = Union[str, os.PathLike, Mapping[str, Any]]


def load_json(source: JsonSource, what: str) -> tuple[Mapping[str, Any], str]:
  """Parsed JSON and a name for error messages: the path, or `<what dict>` for a dict."""
  if isinstance(source, Mapping):
    return source, f'<{what} dict>'
  name = os.fspath(source)
  try:
    with open(name) as f:
      return json.load(f), name
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserError(f'{name}: malformed JSON ({e})') from None


def _field(data: Mapping[str, Any], key: str, name: str) -> Any:
  if not isinstance(data, Mapping) or key not in data:
    raise errors.UserError(f'{name}: no {key!r} field at the top level')
  return data[key]


def ground_truth_instances(ground_truth: Mapping[str, Any], subset: str, name: str):
  """Instances of `subset` as arrays, plus its class names (first-appearance order) and videos.

  Returns (class_names, video_ids, known_labels, video_N, label_N, start_N, end_N).
  """
  database = _field(ground_truth, 'database', name)
  class_index, video_index = {}, {}
  video, label, start, end = [], [], [], []
  known_labels = set(ground_truth.get('activity_list', ()))
  if not isinstance(database, Mapping):
    raise errors.UserError(f"{name}: 'database' must map video names to entries, got "
                           f'{type(database).__name__}')
  for video_id, entry in database.items():
    try:
      annotations = entry.get('annotations', ())
      known_labels.update(ann['label'] for ann in annotations)
      if entry.get('subset') != subset:
        continue
      segments = [(ann['label'], float(ann['segment'][0]), float(ann['segment'][1]))
                  for ann in annotations]
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
      raise errors.UserError(
          f"{name}: video {video_id!r}: malformed entry (expected {{'subset', 'annotations': "
          f"[{{'label', 'segment': [start, end]}}, ...]}}; {type(e).__name__}: {e})") from None
    video_index.setdefault(video_id, len(video_index))
    for ann_label, ann_start, ann_end in segments:
      if not valid_segment(ann_start, ann_end):
        raise errors.UserError(f'{name}: video {video_id!r}: bad ground-truth segment '
                               f'[{ann_start}, {ann_end}] (must be finite with end >= start)')
      class_index.setdefault(ann_label, len(class_index))
      video.append(video_index[video_id])
      label.append(class_index[ann_label])
      start.append(ann_start)
      end.append(ann_end)
  if not label:
    raise errors.UserError(f'{name}: subset {subset!r} has no ground-truth instance')
  return (list(class_index), video_index, known_labels, np.asarray(video, np.int64),
          np.asarray(label, np.int64), np.asarray(start), np.asarray(end))


def prediction_instances(predictions: Mapping[str, Any], class_names: Sequence[str],
                         video_index: Mapping[str, int], known_labels: set, name: str):
  """Predictions as arrays (video -1: not in the subset; class -1: not a subset class).

  Returns (video_D, label_D, start_D, end_D, score_D) in file order.
  """
  results = _field(predictions, 'results', name)
  if not isinstance(results, Mapping):
    raise errors.UserError(f"{name}: 'results' must map video names to lists of detections, got "
                           f'{type(results).__name__} {str(results)[:60]}')
  class_index = {c: i for i, c in enumerate(class_names)}
  video, label, start, end, score = [], [], [], [], []
  for video_id, detections in results.items():
    v = video_index.get(video_id, -1)
    if not isinstance(detections, list):
      raise errors.UserError(f'{name}: video {video_id!r}: expected a list of detections, got '
                             f'{type(detections).__name__}')
    for det in detections:
      try:
        det_label, (det_start, det_end), det_score = det['label'], det['segment'], det['score']
        det_start, det_end, det_score = float(det_start), float(det_end), float(det_score)
      except (KeyError, TypeError, ValueError) as e:
        raise errors.UserError(
            f'{name}: video {video_id!r}: malformed prediction {det!r} ({e})') from None
      if det_label not in known_labels:
        raise errors.UserError(f'{name}: video {video_id!r}: label {det_label!r} is not a class of '
                         'the ground truth')
      if not valid_segment(det_start, det_end):
        raise errors.UserError(f'{name}: video {video_id!r}: bad segment {det["segment"]!r} '
                         '(must be finite with end >= start)')
      if not math.isfinite(det_score):
        raise errors.UserError(f'{name}: video {video_id!r}: non-finite score {det["score"]!r}')
      video.append(v)
      label.append(class_index.get(det_label, -1))
      start.append(det_start)
      end.append(det_end)
      score.append(det_score)
  return (np.asarray(video, np.int64), np.asarray(label, np.int64),
          np.asarray(start, np.float64), np.asarray(end, np.float64),
          np.asarray(score, np.float64))


def segment_tiou(pred_start, pred_end, gt_start, gt_end) -> np.ndarray:
  """Elementwise tIoU, with the official operation order (so results are bit-identical)."""
  inter = np.clip(np.minimum(pred_end, gt_end) - np.maximum(pred_start, gt_start), 0, None)
  union = (gt_end - gt_start) + (pred_end - pred_start) - inter
  with np.errstate(invalid='ignore', divide='ignore'):
    return inter / union


def ranked_candidates(pred_group, pred_start, pred_end, gt_group, gt_start, gt_end,
                      min_tiou: float):
  """Each prediction's ground truths of its (video, class) with tIoU >= min_tiou, best first.

  `gt_*` are sorted by group with file order kept inside a group. Returns (pred, gt, tiou) for
  every candidate pair, ordered by prediction, then tIoU descending (NaN first), then the
  later-listed ground truth first.
  """
  lo = np.searchsorted(gt_group, pred_group, side='left')
  hi = np.searchsorted(gt_group, pred_group, side='right')
  counts = np.where(pred_group >= 0, hi - lo, 0)
  pred = np.repeat(np.arange(pred_group.size), counts)
  first_pair = np.cumsum(counts) - counts
  gt = np.repeat(lo, counts) + np.arange(pred.size) - np.repeat(first_pair, counts)
  tiou = segment_tiou(pred_start[pred], pred_end[pred], gt_start[gt], gt_end[gt])
  candidate = ~(tiou < min_tiou)
  pred, gt, tiou = pred[candidate], gt[candidate], tiou[candidate]
  order = np.lexsort((-gt, -np.where(np.isnan(tiou), np.inf, tiou), pred))
  return pred[order], gt[order], tiou[order]


def rank_within_group(group: np.ndarray) -> np.ndarray:
  """Position of each element among the elements of its group, in array order."""
  order = np.argsort(group, kind='stable')
  sorted_group = group[order]
  group_start = np.searchsorted(sorted_group, sorted_group, side='left')
  rank = np.empty_like(order)
  rank[order] = np.arange(group.size) - group_start
  return rank


def greedy_match(num_preds: int, num_gts: int, pair_pred, pair_gt, pair_tiou,
                 pred_group, tiou_thresholds) -> np.ndarray:
  """True positives [num_thresholds, num_preds] of the greedy matching in prediction order.

  Predictions of one (video, class) group compete only with each other, so the k-th prediction
  of every group is decided in the same vectorised step.
  """
  thresholds_U = np.asarray(tiou_thresholds, np.float64)
  tp_UxD = np.zeros((thresholds_U.size, num_preds), bool)
  if pair_pred.size == 0:
    return tp_UxD
  preds, first_pair, width = np.unique(pair_pred, return_index=True, return_counts=True)
  slot = np.arange(pair_pred.size) - np.repeat(first_pair, width)
  row = np.repeat(np.arange(preds.size), width)
  cand_gt_DxJ = np.full((preds.size, width.max()), num_gts)
  cand_tiou_DxJ = np.full((preds.size, width.max()), -np.inf)
  cand_gt_DxJ[row, slot] = pair_gt
  cand_tiou_DxJ[row, slot] = pair_tiou
  step = rank_within_group(pred_group[preds])
  by_step = np.argsort(step, kind='stable')
  bounds = np.searchsorted(step[by_step], np.arange(step.max() + 2))
  locked_UxN1 = np.zeros((thresholds_U.size, num_gts + 1), bool)
  u_index = np.arange(thresholds_U.size)[:, None]
  for k in range(step.max() + 1):
    rows = by_step[bounds[k]:bounds[k + 1]]
    cand_gt = cand_gt_DxJ[rows]
    passes = ~(cand_tiou_DxJ[rows][None] < thresholds_U[:, None, None])
    free_UxDxJ = passes & ~locked_UxN1[:, cand_gt]
    matched_UxD = free_UxDxJ.any(axis=2)
    chosen_UxD = cand_gt[np.arange(rows.size)[None], free_UxDxJ.argmax(axis=2)]
    matched_u = np.broadcast_to(u_index, chosen_UxD.shape)[matched_UxD]
    locked_UxN1[matched_u, chosen_UxD[matched_UxD]] = True
    tp_UxD[:, preds[rows]] = matched_UxD
  return tp_UxD


def interpolated_average_precision(tp_UxD: np.ndarray, num_positives: int) -> np.ndarray:
  """All-point interpolated AP (VOC 2011) per threshold, from TP flags in rank order."""
  if tp_UxD.shape[1] == 0:
    return np.zeros(tp_UxD.shape[0])
  tp_cum = np.cumsum(tp_UxD, axis=1, dtype=np.float64)
  precision = tp_cum / np.arange(1, tp_UxD.shape[1] + 1)
  recall = tp_cum / num_positives
  zeros = np.zeros((tp_UxD.shape[0], 1))
  precision = np.concatenate([zeros, precision, zeros], axis=1)
  recall = np.concatenate([zeros, recall, zeros + 1], axis=1)
  envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
  step = recall[:, 1:] - recall[:, :-1]
  return np.where(step != 0, step * envelope[:, 1:], 0).sum(axis=1)


def average_precision_per_class(ground_truth: JsonSource, predictions: JsonSource, *,
                                subset: str, tiou_thresholds: Sequence[float]):
  """AP [num_thresholds, num_classes] and the class names (order of first appearance)."""
  gt_data, gt_name = load_json(ground_truth, 'ground truth')
  pred_data, pred_name = load_json(predictions, 'predictions')
  class_names, video_index, known_labels, gt_video, gt_label, gt_start, gt_end = (
      ground_truth_instances(gt_data, subset, gt_name))
  video, label, start, end, score = prediction_instances(
      pred_data, class_names, video_index, known_labels, pred_name)

  num_videos = len(video_index)
  gt_group = gt_label * num_videos + gt_video
  gt_order = np.argsort(gt_group, kind='stable')
  gt_group, gt_start, gt_end = gt_group[gt_order], gt_start[gt_order], gt_end[gt_order]

  in_subset = np.nonzero(label >= 0)[0]
  ranked = in_subset[np.lexsort((-in_subset, -score[in_subset], label[in_subset]))]
  label, start, end = label[ranked], start[ranked], end[ranked]
  pred_group = np.where(video[ranked] >= 0, label * num_videos + video[ranked], -1)

  pair_pred, pair_gt, pair_tiou = ranked_candidates(
      pred_group, start, end, gt_group, gt_start, gt_end, min(tiou_thresholds))
  tp_UxD = greedy_match(ranked.size, gt_group.size, pair_pred, pair_gt, pair_tiou, pred_group,
                        tiou_thresholds)

  class_bounds = np.searchsorted(label, np.arange(len(class_names) + 1))
  positives = np.bincount(gt_label, minlength=len(class_names))
  ap_UxC = np.stack([
      interpolated_average_precision(tp_UxD[:, class_bounds[c]:class_bounds[c + 1]], positives[c])
      for c in range(len(class_names))], axis=1)
  return ap_UxC, class_names


def detection_map(ground_truth: JsonSource, predictions: JsonSource, *, subset: str,
                  tiou_thresholds: Sequence[float]) -> tuple[np.ndarray, float]:
  """mAP per tIoU threshold and its mean over the thresholds.

  Args:
    ground_truth: ActivityNet-format ground truth (`database` of videos with `subset` and
      `annotations`), parsed or a path.
    predictions: ActivityNet results format (`results`: video -> list of `label`, `segment`,
      `score`), parsed or a path.
    subset: the ground-truth subset scored, e.g. 'test' (THUMOS14) or 'validation'.
    tiou_thresholds: the tIoU thresholds.
  """
  ap_UxC, _ = average_precision_per_class(ground_truth, predictions, subset=subset,
                                          tiou_thresholds=tiou_thresholds)
  map_U = ap_UxC.mean(axis=1)
  return map_U, float(map_U.mean())
