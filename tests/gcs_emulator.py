"""gcp-storage-emulator on 127.0.0.1, in memory, with one bucket, plus the generation header.

  python -m tests.gcs_emulator PORT BUCKET

The emulator answers media downloads without the `x-goog-generation` header that Cloud Storage
sends. Tensorstore (orbax's array writer) reads an object's generation from it when it reads an
OCDBT manifest back before updating it, and fails with "Malformed StorageGeneration" without it;
this launcher adds the header and changes nothing else. (The emulator also ignores generation
preconditions; with one writer per object, as in a run, nothing depends on them.)
"""

import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    metadata = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
  except NotFound:
    return
  response['x-goog-generation'] = metadata['generation']
  response['x-goog-metageneration'] = metadata['metageneration']


def main(port: str, bucket: str) -> None:
  objects.download = download_with_generation  # `objects.get` looks it up at each call
  server.create_server('127.0.0.1', int(port), in_memory=True, default_bucket=bucket).run()


if __name__ == '__main__':
  main(*sys.argv[1:])
