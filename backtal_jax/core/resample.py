"""Resampling along time, as the official code does it with OpenCV (no OpenCV needed)."""

import numpy as np


def linear_resize(x_TxX: np.ndarray, length: int) -> np.ndarray:
  """Stretches x along axis 0 to `length` rows exactly as cv2.resize(INTER_LINEAR) on float32.

  OpenCV samples source position (i + 0.5) * scale - 0.5 (computed in double, stored as float32),
  clamps it at both ends and blends the two neighbours with float32 weights.
  """
  x_TxX = np.asarray(x_TxX, np.float32)
  num_in = x_TxX.shape[0]
  if length == num_in:
    return x_TxX.copy()
  scale = 1.0 / (length / num_in)
  pos_L = ((np.arange(length) + 0.5) * scale - 0.5).astype(np.float32)
  left_L = np.floor(pos_L)
  frac_L = pos_L - left_L
  left_L = left_L.astype(np.int64)
  before_start = left_L < 0
  past_end = left_L >= num_in - 1
  frac_L[before_start | past_end] = 0
  left_L[before_start] = 0
  left_L[past_end] = num_in - 1
  right_L = np.minimum(left_L + 1, num_in - 1)
  weight_left = (np.float32(1) - frac_L)[:, None]
  weight_right = frac_L[:, None]
  blended = x_TxX[left_L] * weight_left + x_TxX[right_L] * weight_right
  return np.where(past_end[:, None], x_TxX[left_L] * weight_left, blended)
