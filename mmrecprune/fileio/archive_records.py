"""``torch.save``'s zip container: one folder of stored (not compressed) records, each read at
most once, never more bytes than the file holds."""
import io
import os
import zipfile

import torch

from .archive_values import Storage, refuse


def open_archive(source):
    """The zip's records by name (without the archive's folder), and the file's size."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        target, size = io.BytesIO(bytes(source)), len(source)
    else:
        target, size = source, os.path.getsize(source)
    try:
        zf = zipfile.ZipFile(target)  # a path is opened and closed by the ZipFile
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        refuse('not a PyTorch archive (torch.save has written zip files since PyTorch 1.6; a '
               f'truncated or corrupted file, or another format): {err}')
    if not infos:
        refuse('empty zip archive')
    root = infos[0].filename.split('/', 1)[0]
    records = {}
    for info in infos:
        head, _, rest = info.filename.partition('/')
        if head != root or not rest or rest in records:
            refuse(f'archive entry {info.filename!r} is not under one folder, or repeats')
        if info.compress_type != zipfile.ZIP_STORED:
            refuse(f'archive entry {info.filename!r} is compressed; torch.save stores entries')
        records[rest] = info
    if 'data.pkl' not in records:
        refuse('the archive has no data.pkl: not written by torch.save')
    return zf, records, size



class ArchiveBudget:
    """Reads records, each once, and refuses to read more bytes than the file holds."""

    def __init__(self, zf, records, file_size):
        self.zf, self.records, self.left = zf, records, file_size
        self.storages = {}

    def read(self, name):
        info = self.records.get(name)
        if info is None:
            refuse(f'the archive has no record {name!r}')
        if info.file_size > self.left:
            refuse(f'archive record {name!r} declares {info.file_size} bytes, more than the '
                   'file holds')
        self.left -= info.file_size
        try:
            with self.zf.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            refuse(f'archive record {name!r} is corrupted: {err}')
        if len(data) != info.file_size:
            refuse(f'archive record {name!r} is truncated')
        return data

    def storage(self, key, dtype, numel):
        if key in self.storages:
            found = self.storages[key]
            if found.dtype != dtype or found.numel != numel:
                refuse(f'storage {key!r} is referenced with two types or sizes')
            return found
        itemsize = torch.empty(0, dtype=dtype).element_size()
        info = self.records.get(f'data/{key}')
        if info is None:
            refuse(f'storage {key!r} has no record in the archive')
        if info.file_size != numel * itemsize:
            refuse(f'storage {key!r} declares {numel} x {itemsize} bytes but its record holds '
                   f'{info.file_size}')
        data = bytearray(self.read(f'data/{key}'))
        untyped = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(
            0, dtype=torch.uint8)
        found = Storage(untyped.untyped_storage(), dtype, numel)
        self.storages[key] = found
        return found
