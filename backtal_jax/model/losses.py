"""The BackTAL loss terms, vectorised over videos and classes with masks (fixed shapes, jittable).

Each term equals the official BackTALLoss on the same inputs. Two departures, both where the
official code crashes or divides by zero:
- a click-dependent term (click, separation, embedding) over a batch in which no video has a click
  of the kind it needs is 0 (with zero gradient), not NaN or an exception;
- a video with background clicks but no positive label adds nothing to the separation term.
`example_mask` (1 for real videos, 0 for the padding of a last partial batch) makes every term the
official average over the real videos alone.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from backtal_jax.core import fields
from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.model.topk import num_topk
from backtal_jax.model.topk import topk_mean_over_time

# config.loss: what each field may hold (core/fields.py), checked before the first step
CONFIG_FIELDS = {
    'loss.norm_weight': fields.number(0),
    'loss.click_weight': fields.number(0),
    'loss.separation_weight': fields.number(0),
    'loss.embedding_weight': fields.number(0),
    'loss.separation_fg': fields.choice('video_score', 'own_topk'),
    'loss.separation_topk_ratio': fields.number(0, 1, low_open=True),
    'loss.similar_min': fields.number(-1, 1),  # cosine similarities
    'loss.different_max': fields.number(-1, 1),
}


def _at_least_f32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _masked_mean(values_B: jax.Array, weights_B: jax.Array) -> jax.Array:
  """Weighted mean that is 0 (with zero gradient) when every weight is 0."""
  kept_B = jnp.where(weights_B > 0, values_B, 0)
  return jnp.sum(kept_B * weights_B) / jnp.maximum(jnp.sum(weights_B), 1e-30)


def video_classification_loss(scores_BxC1, labels_BxC1, example_mask_B):
  """Cross-entropy of softmaxed video scores against labels normalised to sum 1."""
  target_BxC1 = labels_BxC1 / (jnp.sum(labels_BxC1, axis=1, keepdims=True) + 1e-10)
  per_video_B = -jnp.sum(target_BxC1 * jax.nn.log_softmax(scores_BxC1, axis=1), axis=1)
  return _masked_mean(per_video_B, example_mask_B)


def foreground_norm_loss(fore_weights_BxTx1, example_mask_B):
  """Mean over videos of the L1 norm over time of the foreground weights."""
  return _masked_mean(jnp.sum(jnp.abs(fore_weights_BxTx1[..., 0]), axis=1), example_mask_B)


def click_loss(cas_BxTxC1, click_labels_BxT, example_mask_B):
  """Frame cross-entropy at clicked frames (background or action), ignoring unclicked ones."""
  clicked_BxT = (click_labels_BxT != IGNORE_LABEL) & (example_mask_B[:, None] > 0)
  target_BxT = jnp.where(clicked_BxT, click_labels_BxT, 0)
  log_prob_BxTxC1 = jax.nn.log_softmax(cas_BxTxC1, axis=-1)
  nll_BxT = -jnp.take_along_axis(log_prob_BxTxC1, target_BxT[..., None], axis=-1)[..., 0]
  return _masked_mean(nll_BxT.reshape(-1), clicked_BxT.reshape(-1).astype(nll_BxT.dtype))


def background_click_mask(click_labels_BxT, num_classes, example_mask_B):
  """Background-clicked frames of the real videos: [B, T] bool."""
  return (click_labels_BxT == num_classes) & (example_mask_B[:, None] > 0)


def separation_loss(fg_score_BxC, cas_BxTxC1, video_labels_BxC, bg_click_BxT):
  """Per ground-truth class, a 2-way softmax of [fg score, mean CAS at background clicks] -> fg.

  Averaged over the video's classes, then over the videos that have a background click.
  """
  num_classes = video_labels_BxC.shape[1]
  clicks_B = jnp.sum(bg_click_BxT, axis=1)
  bg_sum_BxC = jnp.einsum('bt,btc->bc', bg_click_BxT.astype(cas_BxTxC1.dtype),
                          cas_BxTxC1[..., :num_classes])
  bg_score_BxC = bg_sum_BxC / jnp.maximum(clicks_B, 1)[:, None]
  nll_BxC = jax.nn.softplus(bg_score_BxC - fg_score_BxC)
  positive_BxC = (video_labels_BxC == 1).astype(nll_BxC.dtype)
  per_video_B = _masked_mean_rows(nll_BxC, positive_BxC)
  contributes_B = (clicks_B > 0) & (jnp.sum(positive_BxC, axis=1) > 0)
  return _masked_mean(per_video_B, contributes_B.astype(per_video_B.dtype))


def _masked_mean_rows(values_BxC, weights_BxC):
  return jax.vmap(_masked_mean)(values_BxC, weights_BxC)


def _cosine(a_TxE, b_TxE, eps=1e-8):
  """Row-wise cosine similarity with the product of norms clamped at eps, as the official loss."""
  norms_T = jnp.linalg.norm(a_TxE, axis=-1) * jnp.linalg.norm(b_TxE, axis=-1)
  return jnp.sum(a_TxE * b_TxE, axis=-1) / jnp.maximum(norms_T, eps)


def _similarity_matrix_without_gradient(embedding_TxE):
  unit_TxE = embedding_TxE / jnp.maximum(jnp.linalg.norm(embedding_TxE, axis=-1, keepdims=True),
                                         1e-30)
  return jax.lax.stop_gradient(unit_TxE @ unit_TxE.T)


def _hardest_partner(sim_TxT, partner_T, mode):
  """For every frame, the partner frame with the lowest ('min') or highest ('max') similarity.

  Chosen without gradient; like torch.min/max, only the chosen pair then carries a gradient,
  which keeps the backward pass O(T E) instead of O(T^2).
  """
  if mode == 'min':
    return jnp.argmin(jnp.where(partner_T[None, :], sim_TxT, jnp.inf), axis=1)
  return jnp.argmax(jnp.where(partner_T[None, :], sim_TxT, -jnp.inf), axis=1)


def _hinge(x):
  return jnp.maximum(x, 0)


def _embedding_hinge_one_video(embedding_TxE, fg_count_T, bg_T, similar_min, different_max):
  """The four hinge terms of one video, with fg frames weighted by their multiplicity.

  The official code concatenates the top-k frames of every ground-truth class, so a frame in the
  top-k of two classes is listed twice: it counts twice in the means, never in the min/max.
  """
  fg_T = fg_count_T > 0
  sim_TxT = _similarity_matrix_without_gradient(embedding_TxE)

  def hardest_similarity(partner_T, mode):
    partner_idx_T = _hardest_partner(sim_TxT, partner_T, mode)
    return _cosine(embedding_TxE, embedding_TxE[partner_idx_T])

  bg_weight_T = bg_T.astype(embedding_TxE.dtype)
  fg_weight_T = fg_count_T.astype(embedding_TxE.dtype)
  return (_masked_mean(_hinge(similar_min - hardest_similarity(fg_T, 'min')), fg_weight_T) +
          _masked_mean(_hinge(similar_min - hardest_similarity(bg_T, 'min')), bg_weight_T) +
          _masked_mean(_hinge(hardest_similarity(bg_T, 'max') - different_max), fg_weight_T) +
          _masked_mean(_hinge(hardest_similarity(fg_T, 'max') - different_max), bg_weight_T))


def _indicator(indices_k, length):
  return jnp.zeros(length, jnp.int32).at[indices_k].set(1)


def topk_frame_counts(cas_BxTxC1, video_labels_BxC, k):
  """How many ground-truth classes have each frame among their k highest CAS values: [B, T]."""
  num_classes = video_labels_BxC.shape[1]
  cas_BxCxT = jnp.swapaxes(cas_BxTxC1[..., :num_classes], 1, 2)
  _, top_BxCxk = jax.lax.top_k(jax.lax.stop_gradient(cas_BxCxT), k)
  indicator = functools.partial(_indicator, length=cas_BxCxT.shape[-1])
  in_top_BxCxT = jax.vmap(jax.vmap(indicator))(top_BxCxk)
  positive_BxC = (video_labels_BxC == 1).astype(jnp.int32)
  return jnp.einsum('bct,bc->bt', in_top_BxCxT, positive_BxC)


def embedding_hinge_loss(embedding_BxTxE, cas_supp_BxTxC1, video_labels_BxC, bg_click_BxT, k,
                  similar_min, different_max):
  """Embedding hinge loss: fg = top-k frames of cas_supp per GT class, bg = background clicks.

  fg-fg and bg-bg similarity must reach `similar_min`, fg-bg stay below `different_max`, each on
  the hardest pair; averaged over the videos with a background click.
  """
  fg_count_BxT = topk_frame_counts(cas_supp_BxTxC1, video_labels_BxC, k)
  per_video_B = jax.vmap(_embedding_hinge_one_video, in_axes=(0, 0, 0, None, None))(
      embedding_BxTxE, fg_count_BxT, bg_click_BxT, similar_min, different_max)
  has_click_B = jnp.any(bg_click_BxT, axis=1) & jnp.any(fg_count_BxT > 0, axis=1)
  return _masked_mean(per_video_B, has_click_B.astype(per_video_B.dtype))


def separation_fg_score(outputs, config: ml_collections.ConfigDict, num_classes: int):
  """The fg side of the separation term: the video score, or a top-k mean with its own ratio."""
  if config.loss.separation_fg == 'video_score':
    return _at_least_f32(outputs['score_base'])[:, :num_classes]
  if config.loss.separation_fg == 'own_topk':
    cas_BxTxC1 = _at_least_f32(outputs['cas_base'])
    k = num_topk(cas_BxTxC1.shape[1], config.loss.separation_topk_ratio)
    return topk_mean_over_time(cas_BxTxC1, k)[:, :num_classes]
  raise ValueError("config.loss.separation_fg must be 'video_score' or 'own_topk', got "
                   f'{config.loss.separation_fg!r}')


def backtal_loss(outputs: Any, video_labels_BxC: jax.Array, click_labels_BxT: jax.Array,
                 config: ml_collections.ConfigDict, example_mask_B: jax.Array | None = None):
  """Total BackTAL loss and its unweighted terms.

  Args:
    outputs: BackTAL outputs (attribute or key access).
    video_labels_BxC: multi-hot video labels over the C action classes.
    click_labels_BxT: -100 = no click, C = background click, 0..C-1 = action click.
    config: the full config; reads config.loss and config.model.topk_ratio.
    example_mask_B: 1 for real videos, 0 for padding; all ones when omitted.

  Returns:
    (total, terms) with terms base, supp, norm, click, separation, embedding (the embedding hinge
    loss, the official C_LOSS_EMBEDDING term), all unweighted.
  """
  num_classes = video_labels_BxC.shape[1]
  if example_mask_B is None:
    example_mask_B = jnp.ones_like(video_labels_BxC[:, 0], jnp.float32)
  cas_base = _at_least_f32(outputs['cas_base'])
  cas_supp = _at_least_f32(outputs['cas_supp'])
  labels = video_labels_BxC.astype(cas_base.dtype)
  mask_B = example_mask_B.astype(cas_base.dtype)
  ones_Bx1 = jnp.ones_like(labels[:, :1])  # sharded like the labels
  bg_click_BxT = background_click_mask(click_labels_BxT, num_classes, mask_B)
  k = num_topk(cas_supp.shape[1], config.model.topk_ratio)

  terms = {
      'base': video_classification_loss(_at_least_f32(outputs['score_base']),
                                         jnp.concatenate([labels, ones_Bx1], axis=1), mask_B),
      'supp': video_classification_loss(_at_least_f32(outputs['score_supp']),
                                         jnp.concatenate([labels, 0 * ones_Bx1], axis=1), mask_B),
      'norm': foreground_norm_loss(_at_least_f32(outputs['fore_weights']), mask_B),
      'click': click_loss(cas_base, click_labels_BxT, mask_B),
      'separation': separation_loss(separation_fg_score(outputs, config, num_classes), cas_base,
                                    labels, bg_click_BxT),
      'embedding': embedding_hinge_loss(_at_least_f32(outputs['embedding']), cas_supp, labels,
                                        bg_click_BxT, k, config.loss.similar_min,
                                        config.loss.different_max),
  }
  total = (terms['base'] + terms['supp'] + config.loss.norm_weight * terms['norm'] +
           config.loss.click_weight * terms['click'] +
           config.loss.separation_weight * terms['separation'] +
           config.loss.embedding_weight * terms['embedding'])
  return total, terms
