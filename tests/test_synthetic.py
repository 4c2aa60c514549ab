"""The semi-synthetic testbed: official layout, determinism and the structure of recipe D."""

import zipfile

import ml_collections
import numpy as np
import pytest

from backtal_jax.data import annotations
from backtal_jax.data import clicks
from backtal_jax.data import synthetic


def _config(dataset='thumos14', **overrides):
  config = synthetic.default_config(dataset)
  config.update(dict(num_segments=60, half_width=16, num_train_videos=3, num_test_videos=2))
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def thumos():
  return annotations.load_ground_truth('thumos14_gt')


def _load(path):
  with np.load(path, allow_pickle=False) as data:
    return {key: data[key] for key in data.files}


def test_thumos14_layout(tmp_path, thumos):
  written = synthetic.build(_config(), tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['test', 'val']
  assert [len(written['val']), len(written['test'])] == [3, 2]
  assert sorted(p.name for p in (tmp_path / 'val').iterdir()) == [
      f'{v.name}.npz' for v in thumos.subset('val')[:3]]  # No temporary file left behind.
  a1 = clicks.thumos14_clicks('A1')
  for path in written['val']:
    data = _load(path)
    video = thumos.videos[str(data['vid_name'])]
    assert set(data) == {'feat_spa', 'feat_tem', 'cls_label', 'vid_name', 'point_label'}
    assert data['feat_spa'].shape == data['feat_tem'].shape == (16, 60)
    assert data['feat_spa'].dtype == data['feat_tem'].dtype == np.float32
    assert data['cls_label'].dtype == np.float32
    np.testing.assert_array_equal(np.flatnonzero(data['cls_label']), video.labels)
    np.testing.assert_array_equal(data['point_label'], clicks.click_labels(
        a1[video.name], duration=video.duration, num_segments=60, class_names=thumos.class_names))
    assert data['point_label'].dtype == np.int32
  for path in written['test']:
    data = _load(path)
    video = thumos.videos[str(data['vid_name'])]
    assert set(data) == {'feat_spa', 'feat_tem', 'cls_label', 'vid_name', 'frame_num', 'fps',
                         'duration'}
    assert data['frame_num'].dtype == np.int64
    assert int(data['frame_num']) == round(video.duration * video.fps / 16)
    assert (float(data['fps']), float(data['duration'])) == (video.fps, video.duration)
  # The official fixtures' convention, e.g. video_test_0000004: 33.826 s at 30 fps -> 63.
  assert int(_load(tmp_path / 'test' / 'video_test_0000004.npz')['frame_num']) == 63


def test_activitynet12_layout_with_simulated_clicks(tmp_path):
  written = synthetic.build(_config('activitynet12', num_segments=20), tmp_path)
  assert sorted(written) == ['training', 'validation']
  data = _load(written['training'][0])
  assert data['cls_label'].shape == (100,) and data['feat_tem'].shape == (16, 20)
  assert set(np.unique(data['point_label'])) <= {-100, 100}
  assert _load(written['validation'][0])['frame_num'] > 0


def test_same_seed_same_bytes(tmp_path):
  files = {}
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    written = synthetic.build(_config(seed=seed), tmp_path / name)
    files[name] = [p.read_bytes() for split in sorted(written) for p in written[split]]
  assert files['a'] == files['b']
  assert all(x != y for x, y in zip(files['a'], files['c']))


def _coefficients(feat_WxT, basis_XxW):
  coef_XxT, *_ = np.linalg.lstsq(basis_XxW.T.astype(np.float64), feat_WxT, rcond=None)
  return coef_XxT


def _video_parts(thumos, config, index):
  video = thumos.subset('val')[index]
  prototypes = synthetic.make_prototypes(config, thumos.num_classes)
  feat_spa_WxT, feat_tem_WxT = synthetic.video_features(video, prototypes, config)
  centres_T = synthetic.snippet_centres(video, config.num_segments)
  classes = list(video.labels)
  inside_AxT, around_AxT = synthetic.class_masks(video, classes, centres_T, config.context_length)
  return video, prototypes, feat_spa_WxT, feat_tem_WxT, inside_AxT, around_AxT


@pytest.mark.parametrize('index', [0, 7, 42])
def test_recipe_d_coefficients_without_noise(thumos, index):
  config = _config(num_segments=200, half_width=64, noise=0.0, distractors_per_instance=0.0)
  video, protos, feat_spa, feat_tem, inside_AxT, around_AxT = _video_parts(thumos, config, index)
  classes = list(video.labels)
  k = len(classes)
  rgb = _coefficients(feat_spa, np.concatenate(
      [protos.scene_CxW[classes], protos.motion_CxW[classes], protos.background_rgb_MxW]))
  flow = _coefficients(feat_tem, np.concatenate(
      [protos.motion_CxW[classes], protos.background_flow_MxW]))
  away_AxT = ~inside_AxT & ~around_AxT
  for row in range(k):
    scene_T = rgb[row]
    jitter = scene_T[away_AxT[row]].mean() if away_AxT[row].any() else 1.0
    assert 0.7 - 1e-5 <= jitter <= 1.3 + 1e-5
    np.testing.assert_allclose(scene_T[away_AxT[row]], jitter, atol=1e-4)
    np.testing.assert_allclose(scene_T[inside_AxT[row]], 2.0 * jitter, atol=1e-4)
    np.testing.assert_allclose(scene_T[around_AxT[row]], 2.5 * jitter, atol=1e-4)
    np.testing.assert_allclose(rgb[k + row], 0.5 * inside_AxT[row], atol=1e-4)
    assert (flow[row][inside_AxT[row]] >= 2.4 - 1e-4).all()
    assert (flow[row][inside_AxT[row]] <= 3.6 + 1e-4).all()
    np.testing.assert_allclose(flow[row][around_AxT[row]], 2.0, atol=1e-4)
    np.testing.assert_allclose(flow[row][away_AxT[row]], 0.0, atol=1e-4)
  for background_MxT in (rgb[2 * k:], flow[k:]):  # One prototype at strength 2 per snippet.
    np.testing.assert_allclose(np.sort(background_MxT, axis=0)[-1], 2.0, atol=1e-4)
    np.testing.assert_allclose(np.sort(background_MxT, axis=0)[:-1], 0.0, atol=1e-4)
  np.testing.assert_array_equal(rgb[2 * k:].argmax(0), flow[k:].argmax(0))


def test_distractors_are_class_like_stretches_outside_instances(thumos):
  config = _config(num_segments=750, half_width=64, noise=0.0)
  found = 0
  for index in range(10):
    video, protos, _, feat_tem, inside_AxT, around_AxT = _video_parts(thumos, config, index)
    classes = list(video.labels)
    flow = _coefficients(feat_tem, np.concatenate(
        [protos.motion_CxW[classes], protos.background_flow_MxW]))[:len(classes)]
    distract_AxT = (flow > 1e-3) & ~inside_AxT & ~around_AxT
    np.testing.assert_allclose(flow[distract_AxT], 2.0, atol=1e-4)
    centres_T = synthetic.snippet_centres(video, config.num_segments)
    for t in np.flatnonzero(distract_AxT.any(0)):
      assert not any(i.start <= centres_T[t] <= i.end for i in video.instances)
    found += distract_AxT.any()
  assert found >= 3


def test_action_context_confusion_with_default_noise(thumos):
  """Flow energy marks the actions; the RGB half shows the scene in background snippets too."""
  config = _config(num_segments=750, half_width=256)
  video, protos, feat_spa, feat_tem, inside_AxT, around_AxT = _video_parts(thumos, config, 0)
  inside_T, away_T = inside_AxT.any(0), ~(inside_AxT | around_AxT).any(0)
  energy_T = np.linalg.norm(feat_tem, axis=0)
  assert energy_T[inside_T].mean() > 1.3 * energy_T[away_T].mean()
  scene_T = protos.scene_CxW[video.labels[0]] @ feat_spa
  other = next(c for c in range(thumos.num_classes) if c not in video.labels)
  assert scene_T[away_T].mean() > 0.5
  assert abs((protos.scene_CxW[other] @ feat_spa)[away_T].mean()) < 0.2
  assert abs((protos.motion_CxW[video.labels[0]] @ feat_tem)[away_T].mean()) < 0.3


def test_smoothness_correlates_neighbours(thumos):
  def neighbour_correlation(smoothness):
    config = _config(num_segments=300, half_width=64, smoothness=smoothness)
    feat = _video_parts(thumos, config, 0)[3]
    feat = feat - feat.mean(1, keepdims=True)
    return (feat[:, 1:] * feat[:, :-1]).sum() / np.sqrt(
        (feat[:, 1:] ** 2).sum() * (feat[:, :-1] ** 2).sum())
  assert neighbour_correlation(3.0) > neighbour_correlation(0.0) + 0.05


def test_write_npz_is_atomic(tmp_path):
  with pytest.raises(ValueError):
    synthetic.write_npz(tmp_path / 'v.npz', {'a': np.zeros(3), 'b': np.array([object()])})
  assert list(tmp_path.iterdir()) == []
  synthetic.write_npz(tmp_path / 'v.npz', {'a': np.arange(3)})
  with zipfile.ZipFile(tmp_path / 'v.npz') as archive:
    assert {i.date_time for i in archive.infolist()} == {synthetic.ZIP_DATE_TIME}


def test_default_config_is_recipe_d():
  config = synthetic.default_config()
  assert isinstance(config, ml_collections.ConfigDict)
  assert (config.scene_inside, config.scene_context, config.motion_inside,
          config.motion_context, config.context_length, config.distractors_per_instance,
          config.background_strength, config.smoothness) == (2.0, 2.5, 3.0, 2.0, 0.3, 0.5, 2.0, 0.0)
  assert all(value is not None for value in config.values())
  assert synthetic.default_config('activitynet12').clicks == 'simulated'


def test_overrides():
  config = synthetic.default_config()
  synthetic.apply_overrides(config, ['noise=0.5', 'num_segments=100',
                                     'simulated_action_clicks=true', 'clicks=union'])
  assert (config.noise, config.num_segments, config.simulated_action_clicks, config.clicks) == (
      0.5, 100, True, 'union')
  with pytest.raises(ValueError, match='nosie'):
    synthetic.apply_overrides(config, ['nosie=1'])


def test_human_clicks_only_for_thumos14(tmp_path):
  with pytest.raises(ValueError, match='simulated'):
    synthetic.build(_config('activitynet12', clicks='A1'), tmp_path)


@pytest.mark.parametrize('name', ['video_validation_0000051', 'video_validation_0000167'])
def test_distractor_mask_avoids_instances(thumos, name):
  config = _config(num_segments=2000)
  video = thumos.videos[name]  # 0000167: 48 instances cover 92% of it.
  classes = list(video.labels)
  centres_T = synthetic.snippet_centres(video, config.num_segments)
  inside_T = synthetic.class_masks(video, classes, centres_T, 0.0)[0].any(0)
  mean_length = np.mean([i.length for i in video.instances])
  total = 0
  for seed in range(20):
    mask_T = synthetic.distractor_mask(video, classes, centres_T, config,
                                       np.random.default_rng(seed)).any(0)
    assert not (mask_T & inside_T).any()
    total += mask_T.sum()
  if name.endswith('51'):  # Sparse: every distractor fits.
    expected = 20 * 0.5 * len(video.instances) * mean_length / video.duration * config.num_segments
    assert 0.5 * expected < total < 1.5 * expected
  assert total > 0
