"""The affinity convolution as fused Pallas TPU kernels: forward, and a backward under custom_vjp.

The XLA forms (backtal_jax.model.affinity) write the three group outputs of each affinity
convolution to HBM in the forward pass and read them back for the similarity gradient, the
largest share of the TPU train step's traffic (benchmarks/RESULTS.md). Here the similarities are
applied to the taps inside the product, in VMEM, so that only [B, T, O] is written:

  out[t] = sum_k (x[t+k-1] * scale_k(t)) @ W[k],   scale_k(t)[c] = s_{g(k, c)}(t),

with g(k, c) = floor((3c + k) / I) for 'official' (a boundary channel's taps may fall into two
groups) and g(k, c) = k for 'paper'. Scaling a tap's row before the product is the official code's
own order (it multiplies the unfolded input by the similarity tile, then takes one product).

A block holds a tile of frames of one video, or whole short videos side by side; the frame just
before and just after a tile come from small halo arrays, and a tap beyond either end of the video
reads zero, as the XLA form's padding does. The backward recomputes the scaled taps and the
products g @ W[k]^T in VMEM instead of reading stored group outputs:

  dx[u] = sum_k (scale_k * (g @ W[k]^T))[u-k+1]          (one kernel, with ds)
  ds[t, j] = sum_{k, c: g(k, c) = j} x[t+k-1, c] * (g @ W[k]^T)[t, c]
  dW[k] = sum_t (x[t+k-1] * scale_k(t))^T g[t]            (a second kernel)

The LeakyReLU that follows each convolution in the network is applied by the forward kernel
before it writes (`negative_slope`), and its gradient is taken from that output's sign.

On a TPU the kernels are compiled by Mosaic; elsewhere they run in TPU interpret mode
(`interpret=True`), which is how the tests check them on the CPU. Products accumulate in float32,
elementwise work is done in float32, and the products' operands are in the input's dtype, except
that on a TPU float32 weights and cotangents are read in bfloat16, as the MXU rounds them
(`narrows`).
"""

import dataclasses
import functools
import math

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from backtal_jax.core import batch_rows
from backtal_jax.model import affinity as affinity_lib

TAPS = affinity_lib.KERNEL_SIZE
FRAME_ALIGN = 16  # frames of a block: a multiple of a (16, 128) bfloat16 tile (two of float32)
ROW_TILES = (256, 512, 768, 1024, 1536, 2048, 3072, 4096)  # rows a block may hold (frames of one
# video's tile, or several short videos side by side), tried by `geometries`
CHANNEL_TILES = (2048, 1024, 512, 256, 128)  # channel tiles tried; a width none divides is one tile
# The VMEM a kernel may take, by the device kind of the mesh it runs on: each chip's whole VMEM,
# as its compiler reports it when a kernel asks for more (16.00 MiB on v4, 128.00 on v5e, 127.94
# on v6e, 63.94 on v5p), in whole MiB. Other kinds (the CPU's interpret mode, other TPUs) get v4's.
VMEM_LIMIT_BYTES = 16 * 2**20
VMEM_LIMITS_BY_KIND = {'TPU v5 lite': 128 * 2**20, 'TPU v6 lite': 127 * 2**20,
                       'TPU v5': 63 * 2**20}
# What `geometries` lets its estimate of a kernel's VMEM (Plan.vmem_bytes) reach, as a share of the
# limit: a margin for shapes unlike those the estimate was fitted to.
VMEM_BUDGET_SHARE = 15 / 16


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Static sizes of one call: B videos of T frames, I -> O channels, and the tiles.

  A block is [batch_tile, frame_tile, channels]; frame_tile is a multiple of FRAME_ALIGN, so the
  block is a whole number of TPU tiles and folds into [batch_tile * frame_tile, channels] rows for
  the products; frames past T (and videos past B) are masked.
  """
  batch: int
  length: int
  c_in: int
  c_out: int
  affinity: str
  batch_tile: int
  frame_tile: int
  in_tile: int
  out_tile: int
  itemsize: int = 4  # bytes of an element of x, the similarities and the results
  mxu_itemsize: int | None = None  # bytes of an element of the kernel and the cotangent as the
  # kernels read them: itemsize's unless narrowed (see `narrows`)
  vmem_limit: int = VMEM_LIMIT_BYTES  # bytes of VMEM each kernel may take

  def __post_init__(self):
    if self.mxu_itemsize is None:
      object.__setattr__(self, 'mxu_itemsize', self.itemsize)

  @property
  def batch_tiles(self) -> int:
    return pl.cdiv(self.batch, self.batch_tile)

  @property
  def frame_tiles(self) -> int:
    return pl.cdiv(self.length, self.frame_tile)

  @property
  def in_tiles(self) -> int:
    return pl.cdiv(self.c_in, self.in_tile)

  @property
  def out_tiles(self) -> int:
    return pl.cdiv(self.c_out, self.out_tile)

  @property
  def rows(self) -> int:
    return self.batch_tile * self.frame_tile


def _channel_tiles(width: int) -> list[int]:
  """Channel tiles that divide `width`, else the whole width (one block: no reduction over
  channels ever sums a ragged edge's padding)."""
  return [tile for tile in CHANNEL_TILES if width % tile == 0] or [width]


def _row_tiles(batch: int, length: int, row_tile: int) -> tuple[int, int]:
  """(videos, frames) of a block of at most `row_tile` rows. A video longer than that is cut into
  equal tiles rather than row_tile and a remainder, so that a tile pads fewer than FRAME_ALIGN
  frames (THUMOS14's 750: two tiles of 384, not 512 + 512 with 274 padded frames, whose
  products the MXU would compute too); shorter videos sit side by side, as many as divide B."""
  tiles = pl.cdiv(length, row_tile)
  frame_tile = pl.cdiv(pl.cdiv(length, tiles), FRAME_ALIGN) * FRAME_ALIGN
  fits = max(1, row_tile // frame_tile)
  return max(d for d in range(1, min(batch, fits) + 1) if batch % d == 0), frame_tile


def vmem_limit(device_kind: str | None) -> int:
  return VMEM_LIMITS_BY_KIND.get(device_kind, VMEM_LIMIT_BYTES)


def geometries(batch: int, length: int, c_in: int, c_out: int, affinity: str,
               itemsize: int = 4, limit: int = VMEM_LIMIT_BYTES,
               mxu_itemsize: int | None = None) -> tuple[Geometry, ...]:
  """Per kernel (forward, input gradient, kernel gradient; see PLANS), the tiles that move the
  fewest HBM bytes (Plan.moved_bytes: its weights are re-read once per block of rows, its inputs
  once per block of channels) among those whose estimated VMEM fits VMEM_BUDGET_SHARE of `limit`;
  fewer grid steps break ties. Each kernel has its own: the forward gains most from long blocks
  of rows, the kernel gradient from wide channel tiles."""
  shapes = {_row_tiles(batch, length, rows) for rows in ROW_TILES}
  candidates = [Geometry(batch, length, c_in, c_out, affinity, batch_tile, frame_tile, in_tile,
                         out_tile, itemsize, mxu_itemsize, limit)
                for batch_tile, frame_tile in shapes for in_tile in _channel_tiles(c_in)
                for out_tile in _channel_tiles(c_out)]
  chosen = []
  for make_plan in PLANS:
    built = [make_plan(g) for g in candidates]
    fitting = [p for p in built if p.vmem_bytes() <= VMEM_BUDGET_SHARE * limit]
    if fitting:
      chosen.append(min(fitting, key=lambda p: (p.moved_bytes(), math.prod(p.grid))).geo)
    else:  # a width no tile divides: its smallest footprint, which Mosaic may refuse
      chosen.append(min(built, key=lambda p: p.vmem_bytes()).geo)
  return tuple(chosen)


def halos(v_BxTxX: jax.Array, geo: Geometry) -> tuple[jax.Array, jax.Array]:
  """v at the frame just before and just after each frame tile: [B, T / tT, 1, X] each, zero
  beyond the video (read by the kernels as a tile's outside neighbours)."""
  tile, inner = geo.frame_tile, (geo.frame_tiles - 1) * geo.frame_tile  # inner: the last start
  zero_Bx1xX = jnp.zeros_like(v_BxTxX[:, :1])
  # Strided slices, not gathers: the compiler counts a gather as reading all of v.
  before = jnp.concatenate([zero_Bx1xX, v_BxTxX[:, tile - 1:inner:tile]], axis=1)
  after = jnp.concatenate([v_BxTxX[:, tile:inner + 1:tile], zero_Bx1xX], axis=1)
  return before[:, :, None], after[:, :, None]


def _tile_spec(geo: Geometry, tile: int, grid_axes: tuple[int, int, int | None]):
  """BlockSpec of a [B, T, X] operand tiled [bB, tT, tile]; grid_axes: the grid axes of its
  batch, frame and channel blocks (None: one block of all X)."""
  b, t, c = grid_axes
  return pl.BlockSpec((geo.batch_tile, geo.frame_tile, tile),
                      lambda *grid: (grid[b], grid[t], grid[c] if c is not None else 0))


def _halo_spec(geo: Geometry, tile: int, grid_axes: tuple[int, int, int | None]):
  """BlockSpec of a halo array [B, T / tT, 1, X]: the tile's own neighbour frames."""
  b, t, c = grid_axes
  return pl.BlockSpec((geo.batch_tile, None, 1, tile),
                      lambda *grid: (grid[b], grid[t], 0, grid[c] if c is not None else 0))


def _positions(geo: Geometry, batch_block, frame_block):
  """Video and frame index of each row of the block: [bB, tT, 1] each."""
  shape = (geo.batch_tile, geo.frame_tile, 1)
  video = batch_block * geo.batch_tile + jax.lax.broadcasted_iota(jnp.int32, shape, 0)
  frame = frame_block * geo.frame_tile + jax.lax.broadcasted_iota(jnp.int32, shape, 1)
  return video, frame


def _valid(geo: Geometry, blocks, value_BxTxX):
  """Zero in the rows past B videos or T frames (a partial block holds whatever lies beyond)."""
  video, frame = _positions(geo, *blocks)
  inside = (video < geo.batch) & (frame < geo.length)
  return jnp.where(inside, value_BxTxX, jnp.zeros_like(value_BxTxX))


def _neighbours(geo: Geometry, blocks, tile_BxTxX, before_Bx1xX, after_Bx1xX):
  """Per row t of the block: (v[t-1], v[t+1]) within its video, zero beyond either end.

  `before_Bx1xX` and `after_Bx1xX` are v at the frames just outside the tile (the halos).
  """
  _, frame = _positions(geo, *blocks)
  position = jax.lax.broadcasted_iota(jnp.int32, (geo.batch_tile, geo.frame_tile, 1), 1)
  previous = pltpu.roll(tile_BxTxX, 1, 1)  # previous[t] = tile[t - 1], wrapping at row 0
  previous = jnp.where(position == 0, before_Bx1xX, previous)
  following = pltpu.roll(tile_BxTxX, geo.frame_tile - 1, 1)  # following[t] = tile[t + 1]
  following = jnp.where(position == geo.frame_tile - 1, after_Bx1xX, following)
  zero = jnp.zeros_like(tile_BxTxX)
  previous = jnp.where(frame == 0, zero, previous)
  following = jnp.where(frame + 1 >= geo.length, zero, following)
  return previous, following


def _taps(geo: Geometry, blocks, x_ref, before_ref, after_ref):
  """x[t-1], x[t], x[t+1] of the block's rows in float32, zero beyond the video and past B."""
  x_BxTxI = _valid(geo, blocks, x_ref[...].astype(jnp.float32))
  previous, following = _neighbours(geo, blocks, x_BxTxI, before_ref[...].astype(jnp.float32),
                                    after_ref[...].astype(jnp.float32))
  return [_valid(geo, blocks, tap) for tap in (previous, x_BxTxI, following)]


def _tap_groups(geo: Geometry, tap: int, in_block):
  """g(tap, c) of the block's input channels: [1, 1, tI] int32 ('official' only)."""
  channel = in_block * geo.in_tile + jax.lax.broadcasted_iota(jnp.int32, (1, 1, geo.in_tile), 2)
  index = TAPS * channel + tap
  return (index >= geo.c_in).astype(jnp.int32) + (index >= 2 * geo.c_in).astype(jnp.int32)


def _tap_scale(geo: Geometry, tap: int, in_block, similarity_BxTx3):
  """scale_tap(t)[c] of the block: [bB, tT, tI] ('official') or [bB, tT, 1] ('paper')."""
  if geo.affinity == 'paper':
    return similarity_BxTx3[..., tap:tap + 1]
  group = _tap_groups(geo, tap, in_block)
  return jnp.where(group == 0, similarity_BxTx3[..., 0:1],
                   jnp.where(group == 1, similarity_BxTx3[..., 1:2], similarity_BxTx3[..., 2:3]))


def _rows(geo: Geometry, value_BxTxX):
  """The block's rows as one matrix [bB * tT, X] (free: tT is a whole number of tiles)."""
  return value_BxTxX.reshape(geo.rows, value_BxTxX.shape[-1])


def _dot(a, b, contracting, precision):
  return jax.lax.dot_general(a, b, (contracting, ((), ())), precision=precision,
                             preferred_element_type=jnp.float32)


def _forward_kernel(x_ref, x_before_ref, x_after_ref, s_ref, w_ref, out_ref, acc_ref, *, geo,
                    precision, negative_slope):
  """Grid (batch blocks, frame blocks, output blocks, input blocks); the last is the sum."""
  blocks, in_block = (pl.program_id(0), pl.program_id(1)), pl.program_id(3)

  @pl.when(in_block == 0)
  def _():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  similarity = s_ref[...].astype(jnp.float32)
  for k, tap in enumerate(_taps(geo, blocks, x_ref, x_before_ref, x_after_ref)):
    scaled = (tap * _tap_scale(geo, k, in_block, similarity)).astype(w_ref.dtype)
    acc_ref[...] += _dot(_rows(geo, scaled), w_ref[k], ((1,), (0,)), precision)

  @pl.when(in_block == pl.num_programs(3) - 1)
  def _():
    out = acc_ref[...]
    if negative_slope is not None:  # on the sum, so the activation has no pass of its own
      out = jax.nn.leaky_relu(out, negative_slope)
    out_ref[...] = out.reshape(out_ref.shape).astype(out_ref.dtype)


def _input_kernel(g_ref, g_before_ref, g_after_ref, w_ref, x_ref, x_before_ref, x_after_ref,
                  s_ref, s_before_ref, s_after_ref, dx_ref, ds_ref, gw_ref, gw_before_ref,
                  gw_after_ref, *, geo, precision):
  """dx, and the input block's part of ds; grid (batch blocks, frame blocks, input blocks,
  output blocks), the last being the sum of g @ W[k]^T."""
  blocks = (pl.program_id(0), pl.program_id(1))
  in_block, out_block = pl.program_id(2), pl.program_id(3)

  @pl.when(out_block == 0)
  def _():
    gw_ref[...] = jnp.zeros_like(gw_ref)
    gw_before_ref[...] = jnp.zeros_like(gw_before_ref)
    gw_after_ref[...] = jnp.zeros_like(gw_after_ref)

  over_out = ((1,), (1,))  # [rows, tO] . W[k] [tI, tO] over tO
  g_rows = _rows(geo, g_ref[...])
  for k in range(TAPS):
    gw_ref[k] += _dot(g_rows, w_ref[k], over_out, precision)
  # dx[t] reads tap 0 of frame t+1 and tap 2 of frame t-1: beyond the tile, from the halos.
  gw_after_ref[...] += _dot(g_after_ref[:, 0], w_ref[0], over_out, precision)
  gw_before_ref[...] += _dot(g_before_ref[:, 0], w_ref[TAPS - 1], over_out, precision)

  @pl.when(out_block == pl.num_programs(3) - 1)
  def _():
    shape = (geo.batch_tile, geo.frame_tile, geo.in_tile)
    similarity = s_ref[...].astype(jnp.float32)
    gw = [gw_ref[k].reshape(shape) for k in range(TAPS)]
    weighted = [_valid(geo, blocks, gw[k] * _tap_scale(geo, k, in_block, similarity))
                for k in range(TAPS)]
    after = gw_after_ref[...][:, None] * _tap_scale(
        geo, 0, in_block, s_after_ref[...].astype(jnp.float32))
    before = gw_before_ref[...][:, None] * _tap_scale(
        geo, TAPS - 1, in_block, s_before_ref[...].astype(jnp.float32))
    _, from_following = _neighbours(geo, blocks, weighted[0], before, after)
    from_previous, _ = _neighbours(geo, blocks, weighted[TAPS - 1], before, after)
    dx_ref[...] = (weighted[1] + from_following + from_previous).astype(dx_ref.dtype)

    taps = _taps(geo, blocks, x_ref, x_before_ref, x_after_ref)
    lane = jax.lax.broadcasted_iota(jnp.int32, (1, 1, TAPS), 2)
    ds = jnp.zeros((geo.batch_tile, geo.frame_tile, TAPS), jnp.float32)
    for k, tap in enumerate(taps):
      product = tap * _valid(geo, blocks, gw[k])
      if geo.affinity == 'paper':
        ds += jnp.where(lane == k, jnp.sum(product, axis=-1, keepdims=True), 0.0)
        continue
      group = _tap_groups(geo, k, in_block)
      for j in range(TAPS):
        part = jnp.sum(jnp.where(group == j, product, 0.0), axis=-1, keepdims=True)
        ds += jnp.where(lane == j, part, 0.0)
    ds_ref[...] = ds


def _kernel_grad_kernel(x_ref, x_before_ref, x_after_ref, s_ref, g_ref, dw_ref, acc_ref, *, geo,
                        precision):
  """dW; grid (input blocks, output blocks, batch blocks, frame blocks), the last two the sum."""
  in_block, blocks = pl.program_id(0), (pl.program_id(2), pl.program_id(3))
  first = (pl.program_id(2) == 0) & (pl.program_id(3) == 0)
  last = ((pl.program_id(2) == pl.num_programs(2) - 1) &
          (pl.program_id(3) == pl.num_programs(3) - 1))

  @pl.when(first)
  def _():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  similarity = _valid(geo, blocks, s_ref[...].astype(jnp.float32))
  g_rows = _rows(geo, _valid(geo, blocks, g_ref[...]))
  for k, tap in enumerate(_taps(geo, blocks, x_ref, x_before_ref, x_after_ref)):
    scaled = (tap * _tap_scale(geo, k, in_block, similarity)).astype(g_rows.dtype)
    acc_ref[k] += _dot(_rows(geo, scaled), g_rows, ((0,), (0,)), precision)

  @pl.when(last)
  def _():
    dw_ref[...] = acc_ref[...].astype(dw_ref.dtype)


def _interpret(interpret: bool):
  return pltpu.InterpretParams() if interpret else False


def _compiler_params(geo: Geometry, semantics):
  return pltpu.CompilerParams(dimension_semantics=semantics, vmem_limit_bytes=geo.vmem_limit)


def block_copies(grid: tuple[int, ...], spec: pl.BlockSpec) -> int:
  """How often the pipeline copies a block of `spec` over the grid (row-major, last axis
  fastest): at the first step and again whenever the block index changes. It changes whenever an
  axis at or before the innermost one the index reads moves, so the copies are the product of
  the grid up to that axis."""
  origin = tuple(int(i) for i in spec.index_map(*[0] * len(grid)))
  read = [axis for axis, size in enumerate(grid) if size > 1 and origin != tuple(
      int(i) for i in spec.index_map(*[int(a == axis) for a in range(len(grid))]))]
  return math.prod(grid[:read[-1] + 1]) if read else 1


def _vmem_tile_bytes(shape: tuple[int, ...], itemsize: int) -> int:
  """Bytes of a block in VMEM: its last two dimensions padded to whole (8 x 32-bit, 128) tiles."""
  shape = (1, 1, *shape)
  sublanes = 8 * 4 // itemsize
  rows, lanes = pl.cdiv(shape[-2], sublanes) * sublanes, pl.cdiv(shape[-1], 128) * 128
  return math.prod(shape[:-2]) * rows * lanes * itemsize


@dataclasses.dataclass(frozen=True)
class Plan:
  """One kernel's grid and blocks: what pallas_call runs, and what its cost and VMEM are.

  Specs come with the itemsize of their array. `temporaries`: how many float32 [rows, in_tile]
  and [rows, out_tile] values the kernel body holds at once (taps, scales, products). They were
  fitted to Mosaic's own account of 207 tilings compiled for a TPU v4, each kernel apart (both
  dtypes, the three dataset shapes; none it refused is estimated under 16 MiB), then rounded up
  (benchmarks/RESULTS.md, "The kernels' own traffic").
  """
  geo: Geometry
  grid: tuple[int, ...]
  semantics: tuple[str, ...]
  in_specs: tuple[tuple[pl.BlockSpec, int], ...]
  out_specs: tuple[tuple[pl.BlockSpec, int], ...]
  scratch: tuple[tuple[int, ...], ...]  # float32 VMEM scratch shapes
  temporaries: tuple[float, float]  # float32 [rows, in_tile] and [rows, out_tile] values

  def moved_bytes(self) -> int:
    """HBM bytes the tiling moves: each block times its copies (operands read, results written),
    re-reads included."""
    return sum(block_copies(self.grid, spec) * math.prod(d or 1 for d in spec.block_shape) * size
               for spec, size in (*self.in_specs, *self.out_specs))

  def vmem_bytes(self) -> int:
    """Two buffers of every block (the pipeline fetches the next while one is used), the
    scratch and the body's temporaries."""
    blocks = sum(_vmem_tile_bytes(tuple(d for d in spec.block_shape if d is not None), size)
                 for spec, size in (*self.in_specs, *self.out_specs))
    scratch = sum(_vmem_tile_bytes(shape, 4) for shape in self.scratch)
    per_input, per_output = self.temporaries
    body = (per_input * _vmem_tile_bytes((self.geo.rows, self.geo.in_tile), 4) +
            per_output * _vmem_tile_bytes((self.geo.rows, self.geo.out_tile), 4))
    return 2 * blocks + scratch + body

  def cost(self) -> pl.CostEstimate:
    """Three [B*T, I] x [I, O] products and the tiling's HBM traffic: what the kernel really
    reads and writes, re-reads of weight and input tiles included (the compiler counts its own
    fusions as each operand moved once)."""
    geo = self.geo
    flops = 2 * TAPS * geo.batch * geo.length * geo.c_in * geo.c_out
    return pl.CostEstimate(flops=flops, transcendentals=0, bytes_accessed=self.moved_bytes())


def _rows_with_halos(geo: Geometry, tile: int, grid_axes: tuple[int, int, int | None],
                     itemsize: int | None = None):
  """A [B, T, X] operand's block and its two halo blocks, with their itemsize (x's if None)."""
  itemsize = itemsize or geo.itemsize
  return ((_tile_spec(geo, tile, grid_axes), itemsize),
          (_halo_spec(geo, tile, grid_axes), itemsize),
          (_halo_spec(geo, tile, grid_axes), itemsize))


def _forward_plan(geo: Geometry) -> Plan:
  axes, e = (0, 1, 3), geo.itemsize  # grid axes of the batch, frame and input-channel blocks
  return Plan(
      geo, (geo.batch_tiles, geo.frame_tiles, geo.out_tiles, geo.in_tiles),
      ('parallel', 'parallel', 'parallel', 'arbitrary'),
      (*_rows_with_halos(geo, geo.in_tile, axes), (_tile_spec(geo, TAPS, (0, 1, None)), e),
       (pl.BlockSpec((TAPS, geo.in_tile, geo.out_tile), lambda b, t, o, i: (0, i, o)),
        geo.mxu_itemsize)),
      ((_tile_spec(geo, geo.out_tile, (0, 1, 2)), e),),
      ((geo.rows, geo.out_tile),), temporaries=(4.0, 0.5))


def _input_plan(geo: Geometry) -> Plan:
  e = geo.itemsize
  rows_of = lambda tile, channel_axis, *size: _rows_with_halos(geo, tile, (0, 1, channel_axis),
                                                               *size)
  return Plan(
      geo, (geo.batch_tiles, geo.frame_tiles, geo.in_tiles, geo.out_tiles),
      ('parallel', 'parallel', 'parallel', 'arbitrary'),
      (*rows_of(geo.out_tile, 3, geo.mxu_itemsize),
       (pl.BlockSpec((TAPS, geo.in_tile, geo.out_tile), lambda b, t, i, o: (0, i, o)),
        geo.mxu_itemsize),
       *rows_of(geo.in_tile, 2), *rows_of(TAPS, None)),
      ((_tile_spec(geo, geo.in_tile, (0, 1, 2)), e),
       (pl.BlockSpec((None, geo.batch_tile, geo.frame_tile, TAPS), lambda b, t, i, o: (i, b, t, 0)),
        4)),
      ((TAPS, geo.rows, geo.in_tile), (geo.batch_tile, geo.in_tile),
       (geo.batch_tile, geo.in_tile)), temporaries=(4.5, 1.25))


def _kernel_grad_plan(geo: Geometry) -> Plan:
  axes, e = (2, 3, 0), geo.itemsize  # grid axes of the batch, frame and input-channel blocks
  return Plan(
      geo, (geo.in_tiles, geo.out_tiles, geo.batch_tiles, geo.frame_tiles),
      ('parallel', 'parallel', 'arbitrary', 'arbitrary'),
      (*_rows_with_halos(geo, geo.in_tile, axes), (_tile_spec(geo, TAPS, (2, 3, None)), e),
       (_tile_spec(geo, geo.out_tile, (2, 3, 1)), geo.mxu_itemsize)),
      ((pl.BlockSpec((TAPS, geo.in_tile, geo.out_tile), lambda i, o, b, t: (0, i, o)), e),),
      ((TAPS, geo.in_tile, geo.out_tile),), temporaries=(4.0, 0.5))


PLANS = (_forward_plan, _input_plan, _kernel_grad_plan)


def plans(geos: tuple[Geometry, ...]) -> tuple[Plan, ...]:
  """The forward, input-gradient and kernel-gradient kernels' plans, each at its geometry."""
  return tuple(plan(geo) for plan, geo in zip(PLANS, geos))


def _call(body, name: str, plan: Plan, operands, results, interpret: bool, **static):
  """pallas_call of `body` by `plan`, its cost estimated from the blocks it runs with; `static`:
  the body's keyword arguments besides its geometry."""
  specs = lambda pairs: [spec for spec, _ in pairs]
  out_specs = specs(plan.out_specs)
  return pl.pallas_call(
      functools.partial(body, geo=plan.geo, **static), out_shape=results,
      grid=plan.grid, in_specs=specs(plan.in_specs),
      out_specs=tuple(out_specs) if isinstance(results, tuple) else out_specs[0],
      scratch_shapes=[pltpu.VMEM(shape, jnp.float32) for shape in plan.scratch],
      compiler_params=_compiler_params(plan.geo, plan.semantics), cost_estimate=plan.cost(),
      interpret=_interpret(interpret), name=name)(*operands)


def forward(x_BxTxI, similarity_BxTx3, kernel_KxIxO, geo: Geometry, precision, interpret: bool,
            negative_slope: float | None = None):
  return _call(_forward_kernel, 'affinity_forward', _forward_plan(geo),
               (x_BxTxI, *halos(x_BxTxI, geo), similarity_BxTx3, kernel_KxIxO),
               jax.ShapeDtypeStruct((geo.batch, geo.length, geo.c_out), x_BxTxI.dtype),
               interpret, precision=precision, negative_slope=negative_slope)


def input_and_similarity_grads(g_BxTxO, x_BxTxI, similarity_BxTx3, kernel_KxIxO, geo: Geometry,
                               precision, interpret: bool):
  """dx [B, T, I] and ds [B, T, 3] (the input blocks' parts summed here)."""
  dx_BxTxI, ds_parts = _call(
      _input_kernel, 'affinity_input_grad', _input_plan(geo),
      (g_BxTxO, *halos(g_BxTxO, geo), kernel_KxIxO, x_BxTxI, *halos(x_BxTxI, geo),
       similarity_BxTx3, *halos(similarity_BxTx3, geo)),
      (jax.ShapeDtypeStruct(x_BxTxI.shape, x_BxTxI.dtype),
       jax.ShapeDtypeStruct((geo.in_tiles, geo.batch, geo.length, TAPS), jnp.float32)),
      interpret, precision=precision)
  return dx_BxTxI, jnp.sum(ds_parts, axis=0).astype(similarity_BxTx3.dtype)


def kernel_grad(g_BxTxO, x_BxTxI, similarity_BxTx3, kernel: jax.ShapeDtypeStruct, geo: Geometry,
                precision, interpret: bool):
  """dW, of the kernel's shape and dtype."""
  return _call(_kernel_grad_kernel, 'affinity_kernel_grad', _kernel_grad_plan(geo),
               (x_BxTxI, *halos(x_BxTxI, geo), similarity_BxTx3, g_BxTxO),
               jax.ShapeDtypeStruct(kernel.shape, kernel.dtype), interpret, precision=precision)


def narrows(dtype, kernel_dtype, precision, interpret: bool) -> bool:
  """Whether the kernels read the weights and the cotangent in bfloat16 although x is float32.

  Asked for no precision, a TPU's MXU multiplies float32 operands rounded to bfloat16 (one pass,
  Mosaic's matmul mode 'round', as XLA's DEFAULT dots do), so operands rounded beforehand give the
  same products for half the bytes: the weights are re-read once per block of rows, the cotangent
  once per block of channels. The scaled taps are rounded in VMEM, where they are made. In
  interpret mode the CPU multiplies in float32, so nothing is narrowed there.
  """
  return (not interpret and precision is None and jnp.dtype(dtype) == jnp.float32 and
          jnp.dtype(kernel_dtype) == jnp.float32)


def _narrowed(geo: Geometry) -> bool:
  return geo.mxu_itemsize < geo.itemsize


def _as_read(geo: Geometry, operand):
  """The kernel or the cotangent in the dtype the kernels read it (see `narrows`)."""
  return operand.astype(jnp.bfloat16) if _narrowed(geo) else operand


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _fused(x_BxTxI, similarity_BxTx3, kernel_KxIxO, geos: tuple[Geometry, ...], precision,
           interpret: bool, negative_slope: float | None):
  return forward(x_BxTxI, similarity_BxTx3, _as_read(geos[0], kernel_KxIxO), geos[0], precision,
                 interpret, negative_slope)


def _fused_forward(x_BxTxI, similarity_BxTx3, kernel_KxIxO, geos, precision, interpret,
                   negative_slope):
  kernel_read = _as_read(geos[0], kernel_KxIxO)
  out = forward(x_BxTxI, similarity_BxTx3, kernel_read, geos[0], precision, interpret,
                negative_slope)
  # The activation's gradient reads the sign of its output (LeakyReLU keeps the sign), so the sum
  # before it is never stored.
  activated = out if negative_slope is not None else None
  return out, (x_BxTxI, similarity_BxTx3, kernel_read, activated)


def _fused_backward(geos, precision, interpret, negative_slope, residuals, g_BxTxO):
  x_BxTxI, similarity_BxTx3, kernel_read, activated = residuals
  g_BxTxO = g_BxTxO.astype(x_BxTxI.dtype)
  if negative_slope is not None:  # jax.nn.leaky_relu's gradient: 1 where its input is >= 0
    g_BxTxO = jnp.where(activated >= 0, g_BxTxO, negative_slope * g_BxTxO)
  g_BxTxO = _as_read(geos[1], g_BxTxO)
  dx, ds = input_and_similarity_grads(g_BxTxO, x_BxTxI, similarity_BxTx3, kernel_read, geos[1],
                                      precision, interpret)
  # A narrowed kernel was float32 (see narrows), and so is its gradient.
  kernel = jax.ShapeDtypeStruct(kernel_read.shape,
                                jnp.float32 if _narrowed(geos[2]) else kernel_read.dtype)
  dw = kernel_grad(g_BxTxO, x_BxTxI, similarity_BxTx3, kernel, geos[2], precision, interpret)
  return dx, ds, dw


_fused.defvjp(_fused_forward, _fused_backward)


def shard_geometries(x_BxTxI, kernel_KxIxO, *, affinity: str, precision, interpret: bool,
                     limit: int) -> tuple[Geometry, ...]:
  """The three kernels' geometries for one device's x and kernel (arrays or their shapes)."""
  batch, length, c_in = x_BxTxI.shape
  narrowed = narrows(x_BxTxI.dtype, kernel_KxIxO.dtype, precision, interpret)
  return geometries(batch, length, c_in, kernel_KxIxO.shape[-1], affinity,
                    jnp.dtype(x_BxTxI.dtype).itemsize, limit,
                    jnp.dtype(jnp.bfloat16).itemsize if narrowed else None)


def _one_shard(x_BxTxI, similarity_BxTx3, kernel_KxIxO, *, affinity, precision, interpret,
               limit, negative_slope):
  geos = shard_geometries(x_BxTxI, kernel_KxIxO, affinity=affinity, precision=precision,
                          interpret=interpret, limit=limit)
  return _fused(x_BxTxI, similarity_BxTx3, kernel_KxIxO, geos, precision, interpret,
                negative_slope)


def _device_kind(mesh) -> str | None:
  """The kind of device the kernels are compiled for: the mesh's (a step compiled on a CPU host
  for a TPU slice has the slice's), else the default device's on a TPU host; None off TPUs."""
  if not mesh.empty and mesh.abstract_device is not None:
    return mesh.abstract_device.device_kind
  return jax.devices()[0].device_kind if jax.default_backend() == 'tpu' else None


def fused_affinity_conv(x_BxTxI: jax.Array, similarity_BxTx3: jax.Array, kernel_KxIxO: jax.Array,
                        *, affinity: str = 'official', precision=None, interpret: bool = False,
                        negative_slope: float | None = None,
                        vmem_limit_bytes: int | None = None) -> jax.Array:
  """The affinity convolution of a batch through the fused kernels: [B, T, I] -> [B, T, O];
  with `negative_slope`, followed by jax.nn.leaky_relu, applied in the forward kernel.
  `vmem_limit_bytes`: the VMEM the tiles may take; by default the chip's (`vmem_limit`), or v4's
  in interpret mode. A smaller one gives smaller tiles (for comparing tilings on a TPU).

  On a mesh whose batch axis splits the videos, each device runs the kernels on its own videos
  (shard_map; the kernel gradient's parts are summed over the devices by shard_map's transpose),
  since the compiler cannot partition a kernel it does not see into.
  """
  affinity_lib.check_affinity(affinity)
  typed = jax.typeof(x_BxTxI).sharding
  if vmem_limit_bytes is None:
    limit = VMEM_LIMIT_BYTES if interpret else vmem_limit(_device_kind(typed.mesh))
  elif vmem_limit_bytes > 0:
    limit = vmem_limit_bytes
  else:
    raise ValueError(f'fused_affinity_conv: vmem_limit_bytes must be positive, got '
                     f'{vmem_limit_bytes}')
  one_shard = functools.partial(_one_shard, affinity=affinity, precision=precision,
                                interpret=interpret, limit=limit, negative_slope=negative_slope)
  if typed.mesh.empty:
    return one_shard(x_BxTxI, similarity_BxTx3, kernel_KxIxO)
  # Under a mesh a pallas_call must sit in shard_map, even on one device.
  if batch_rows.batch_shards(x_BxTxI) == 1 and typed.mesh.size > 1:
    # Each device would compute every video, and shard_map's transpose would sum their equal
    # kernel gradients; the network always splits its batch over the mesh.
    raise ValueError('fused_affinity_conv: on a mesh of several devices the batch (axis 0) must be '
                     f'split over it, got the sharding {typed}')
  videos = P(typed.spec[0] if typed.spec else None)
  # The kernel as it comes: replicated, or reduced (then its gradient leaves unreduced: each
  # device's own sum, with no all-reduce here). check_vma=False: a pallas_call's results carry no
  # varying-axes annotation.
  weights = P(reduced=jax.typeof(kernel_KxIxO).sharding.spec.reduced)
  return jax.shard_map(one_shard, mesh=typed.mesh, in_specs=(videos, videos, weights),
                       out_specs=videos, check_vma=False)(x_BxTxI, similarity_BxTx3, kernel_KxIxO)
