"""The official code's outputs (tests/testdata/model_*.npz) turned into backtal_jax inputs."""

import ast

import ml_collections
import numpy as np

from configs import activitynet12
from configs import thumos
from tests.conftest import TESTDATA

FIXTURES = ('model_thumos_small', 'model_anet_small')


def load(name: str) -> dict:
  with np.load(TESTDATA / f'{name}.npz', allow_pickle=False) as data:
    return {key: data[key] for key in data.files}


def meta(fixture: dict) -> dict:
  return ast.literal_eval(str(fixture['meta']))


def config_for(fixture: dict, dtype: str) -> ml_collections.ConfigDict:
  """The dataset's config with the fixture's small widths."""
  info = meta(fixture)
  config = thumos.get_config() if info['dataset'] == 'THUMOS14' else activitynet12.get_config()
  config.model.num_classes = info['cls']
  config.model.feat_dim = info['feat']
  config.model.hidden_dim = info['hidden']
  config.model.filter_dim = info['filter_dim']
  config.model.embed_hidden_dim = info['embed_hidden']
  config.model.embed_dim = info['embed']
  config.model.topk_ratio = info['topk_r']
  config.model.dtype = dtype
  config.loss.separation_topk_ratio = info['topk_r_loss']
  config.loss.separation_weight = info['c_topk_bg']
  return config


def torch_state_dict(fixture: dict, prefix: str = 'param/') -> dict:
  return {key[len(prefix):]: value for key, value in fixture.items() if key.startswith(prefix)}


def channels_last(array_BxXxT: np.ndarray) -> np.ndarray:
  return np.swapaxes(array_BxXxT, 1, 2)
