"""Where a compiled TPU program's bytes and cycles go, per instruction and per source operation.

`cost_analysis()` gives one total; this reads the optimized program text
(`compiled.as_text()`, which `python -m benchmarks.tpu_compile --hlo_dir=DIR` writes per row) and
lists its entry computation's instructions by the bytes they touch (each operand read once, each
result written once: the convention of the compiler's count; a Pallas kernel by its own cost
estimate, split between the memories its operands lie in) and by the compiler's own
`estimated_cycles`, then sums them per source operation (the `op_name` the instruction came
from, cut to --depth parts). HBM and the chip's alternate memory (layouts marked `S(n)`) are
counted apart, since only HBM traffic sets a memory-bound step's time.

  python -m benchmarks.hlo_breakdown /tmp/hlo/v5e_thumos14.txt [--top=40] [--depth=4]

The text format is XLA's, not a stable interface; this is a measuring aid for benchmarks/RESULTS.md.
"""

import collections
import dataclasses
import json
import re
from typing import Iterable
from typing import Sequence

from absl import app
from absl import flags

ITEM_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's4': 0.5, 'u4': 0.5, 'bf16': 2, 'f16': 2, 's16': 2,
              'u16': 2, 'f32': 4, 's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
ARRAY = re.compile(r'\b(pred|bf16|[fsu]\d+)\[([\d,]*)\](\{[^}]*\})?')
INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%(\S+) = (.*?) ([a-z][a-z0-9-]*)\((.*)$')
# Instructions that move no data of their own: names for parts of other buffers, or the second
# half of an asynchronous copy whose start is counted.
FREE = {'parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast', 'after-all',
        'partition-id', 'replica-id', 'copy-done', 'slice-done', 'all-reduce-done',
        'all-gather-done', 'collective-permute-done', 'opt-barrier'}
# A view of slices that asynchronous copies laid side by side: it moves nothing of its own.
FREE_CALL = 'custom_call_target="ConcatBitcast"'


@dataclasses.dataclass(frozen=True)
class Instruction:
  name: str
  opcode: str
  hbm_bytes: float  # operands read and results written in HBM
  alternate_bytes: float  # the same in the chip's alternate memory (layout S(n))
  cycles: float  # the compiler's estimated_cycles (0 where it gives none, e.g. Mosaic kernels)
  source: str  # op_name of the source operation, without the jit(...) prefix
  shape: str  # the result type, for reading


def array_bytes(type_text: str) -> tuple[float, float]:
  """(HBM bytes, alternate-memory bytes) of the arrays in a type, tuples included."""
  hbm = alternate = 0.0
  for dtype, dims, layout in ARRAY.findall(type_text):
    size = ITEM_BYTES[dtype]
    for d in filter(None, dims.split(',')):
      size *= int(d)
    if layout and re.search(r'S\(\d+\)', layout):
      alternate += size
    else:
      hbm += size
  return hbm, alternate


def _async_copy_bytes(result: str) -> tuple[float, float]:
  """An asynchronous copy or slice, typed (source, destination, context): the destination's
  bytes read in the source's memory and written in its own (a slice reads only its part)."""
  (source_dtype, _, source_layout), destination = ARRAY.findall(result)[:2]
  del source_dtype
  written = array_bytes(''.join(destination[:1]) + f'[{destination[1]}]{destination[2]}')
  read_alternate = bool(re.search(r'S\(\d+\)', source_layout))
  size = written[0] + written[1]
  return (written[0] + (0 if read_alternate else size),
          written[1] + (size if read_alternate else 0))


def _operands(rest: str) -> list[str]:
  """The %names inside the opcode's own parentheses."""
  depth, end = 1, 0
  for end, char in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(char, 0)
    if depth == 0:
      break
  return re.findall(r'%([\w.-]+)', rest[:end])


def entry_lines(text: str) -> Iterable[str]:
  inside = False
  for line in text.splitlines():
    if line.startswith('ENTRY '):
      inside = True
      continue
    if inside and line.startswith('}'):
      return
    if inside:
      yield line


def parse(text: str) -> list[Instruction]:
  """The entry computation's instructions with their bytes, cycles and source."""
  types: dict[str, str] = {}
  found = []
  for line in entry_lines(text):
    match = INSTRUCTION.match(line)
    if not match:
      continue
    name, result, opcode, rest = match.groups()
    types[name] = result
    if opcode in FREE or FREE_CALL in line:
      continue
    if opcode in ('copy-start', 'slice-start'):
      hbm, alternate = _async_copy_bytes(result)
    else:
      hbm, alternate = array_bytes(result)
      for operand in _operands(rest):
        more = array_bytes(types.get(operand, ''))
        hbm, alternate = hbm + more[0], alternate + more[1]
      estimate = re.search(r'"cost_estimate":\{[^}]*"bytes_accessed":"(\d+)"', line)
      if estimate and hbm + alternate:  # a kernel: the traffic of its tiles, where its data lie
        share = hbm / (hbm + alternate)
        hbm, alternate = float(estimate.group(1)) * share, float(estimate.group(1)) * (1 - share)
    cycles = re.search(r'"estimated_cycles":"(\d+)"', line)
    source = re.search(r'op_name="([^"]*)"', line)
    found.append(Instruction(
        name, opcode, hbm, alternate, float(cycles.group(1)) if cycles else 0.0,
        re.sub(r'^jit\([^)]*\)/', '', source.group(1)) if source else '(no source)',
        ARRAY.sub(lambda m: f'{m.group(1)}[{m.group(2)}]', result)[:60]))
  return found


def by_source(instructions: Sequence[Instruction], depth: int) -> list[tuple[str, dict]]:
  """Bytes and cycles summed per source operation cut to `depth` path parts, largest first."""
  sums = collections.defaultdict(lambda: collections.Counter())
  for ins in instructions:
    key = '/'.join(ins.source.split('/')[:depth])
    sums[key].update(hbm=ins.hbm_bytes, alternate=ins.alternate_bytes, cycles=ins.cycles,
                     count=1)
  return sorted(sums.items(), key=lambda item: -(item[1]['hbm'] + item[1]['alternate']))


def report(instructions: Sequence[Instruction], top: int, depth: int) -> str:
  hbm = sum(i.hbm_bytes for i in instructions)
  alternate = sum(i.alternate_bytes for i in instructions)
  cycles = sum(i.cycles for i in instructions)
  lines = [f'{len(instructions)} instructions: {hbm / 1e9:.3f} GB in HBM, '
           f'{alternate / 1e9:.3f} GB in alternate memory, {cycles / 1e6:.2f} M estimated cycles',
           '', f'Largest {top} instructions by HBM bytes:',
           '| instruction | opcode | result | HBM MB | alt MB | k cycles | source |',
           '| --- | --- | --- | --- | --- | --- | --- |']
  for ins in sorted(instructions, key=lambda i: -i.hbm_bytes)[:top]:
    lines.append(f'| {ins.name} | {ins.opcode} | {ins.shape} | {ins.hbm_bytes / 1e6:.1f} | '
                 f'{ins.alternate_bytes / 1e6:.1f} | {ins.cycles / 1e3:.0f} | {ins.source[-90:]} |')
  lines += ['', f'Per source operation (first {depth} parts of op_name):',
            '| source | instructions | HBM MB | alt MB | k cycles |',
            '| --- | --- | --- | --- | --- |']
  for key, s in by_source(instructions, depth)[:top]:
    lines.append(f'| {key} | {s["count"]} | {s["hbm"] / 1e6:.1f} | {s["alternate"] / 1e6:.1f} | '
                 f'{s["cycles"] / 1e3:.0f} |')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer('top', 40, 'Rows of each table.')
  flags.DEFINE_integer('depth', 4, 'Parts of the op_name path to group by.')
  flags.DEFINE_string('json_out', '', 'Write every instruction as JSON here too.')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('one argument: the optimized program text (compiled.as_text())')
  with open(argv[1]) as f:
    instructions = parse(f.read())
  print(report(instructions, FLAGS.top, FLAGS.depth))
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump([dataclasses.asdict(i) for i in instructions], f, indent=1)


if __name__ == '__main__':
  define_flags()
  app.run(main)
