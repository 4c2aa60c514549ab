"""Files that appear whole or not at all, on local disks and on object stores (gs://): what every
writer of results, records and markers uses, from the data layer up."""

import json
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
