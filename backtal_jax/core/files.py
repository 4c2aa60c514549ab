"""Files that appear whole or not at all, on local disks and on object stores (gs://): what every
writer of results, records and markers uses, from the data layer up."""

import json
import os
from typing import Any

from etils import epath


def write_json_atomically(path: str | epath.PathLike, data: Any) -> None:
  """Writes through a temporary file in the same folder, so a failure leaves nothing partial.

  On object stores (gs://) one upload already appears whole or not at all, and a rename is a copy
  and a delete (gcsfs first tries GCS's moveTo, which plain buckets refuse after ~30 s of retries),
  so the file is written directly there."""
  path = epath.Path(path)
  if '://' in str(path):
    path.write_text(json.dumps(data, indent=1))
    return
  temporary = path.parent / f'.{path.name}.tmp'
  try:
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(path)
  finally:
    if temporary.exists():
      temporary.unlink()


def folder_problem(path: str | epath.PathLike) -> str | None:
  """Why a run could not write into the folder `path` (a file stands there, or it is not
  writable), or None; an absent folder is made when needed. Object stores are not checked."""
  path = epath.Path(path)
  if '://' in str(path) or not path.exists():
    return None
  if not path.is_dir():
    return f'{path} is a file, where the run writes a folder: move it away'
  if not os.access(path, os.W_OK | os.X_OK):
    return f'{path} is not writable: fix its permissions or pick another --workdir'
  return None


def output_file_problem(path: str, flag: str) -> str | None:
  """Why a command could not write the file `path` that `flag` names (its folder is missing, or
  it is a folder itself), or None: checked before any work, not after it."""
  if not path or '://' in path:
    return None
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    return f'{flag}={path}: folder {folder} does not exist'
  if os.path.isdir(path):
    return f'{flag}={path} is a folder, expected a file name'
  return folder_problem(folder)
