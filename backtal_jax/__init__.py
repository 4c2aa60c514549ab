"""BackTAL in JAX/Flax: background-click supervision for temporal action localization.

Array names end in their shape, one letter per axis: `cas_BxTxC1` is [B, T, C+1]. A bare digit is
that size (`similarity_BxTx3`), a digit after a letter adds to it (C1 = C + 1), two letters written
together are one axis of their product (`x_BPxTxF`), and a lowercase k is the top-k count. Each
letter means one thing in every file (`per_class_AP` and the annotators A1-A3 are not shapes):

  B: videos in a batch
  P: passes of the base module (plain and background-suppressed)
  T: snippets of a video (config.data.num_segments)
  S: snippets stored in an input file, before resampling to T
  F: input features of a snippet (RGB and flow halves together)
  W: one half of the input features (RGB or flow), F = 2W
  C: action classes; C1 = C + 1, background last
  A: the classes one video is worked on for (its labels, or its confident classes), a subset of C
  H: hidden width of the base module
  E: embedding width
  K: taps of a convolution kernel (3)
  I: input channels of a convolution
  O: output channels of a convolution
  G: input channels of one similarity group of the affinity convolution
  M: background prototypes of the synthetic features
  L: positions of a CAS stretched to the video's frame_num; L1 = L + 1
  R: proposal thresholds (CAS and feature magnitude)
  Q: proposals (runs of positions above a threshold)
  D: detections scored against the ground truth
  N: ground-truth instances; N1 = N + 1, the last one a sentinel for "none"
  J: candidate ground-truth instances of one detection
  U: tIoU thresholds
  X: any width, in helpers that take one
"""

import importlib

# The public API, importable from the package itself; the modules behind it are internal and may
# move. Loaded on first use, so that `python -m backtal_jax.main` can set up the process (huge
# pages) before JAX is imported, and `backtal_jax.evaluate` never imports JAX.
_PUBLIC = {
    'BackTAL': 'backtal_jax.model.network',
    'backtal_loss': 'backtal_jax.model.losses',
    'params_from_torch': 'backtal_jax.model.official_weights',
    'load_official_checkpoint': 'backtal_jax.model.official_weights',
    'detect_video': 'backtal_jax.evaluation.postprocess',
    'detection_map': 'backtal_jax.evaluation.mean_ap',
    'Predictor': 'backtal_jax.run.predictor',
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
  if name not in _PUBLIC:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(_PUBLIC[name]), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(list(globals()) + __all__)
