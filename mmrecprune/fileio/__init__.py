"""Reading tickets and checkpoints as data (see :mod:`.archive_reader` for the rules)."""
from .archive_reader import UnsafeCheckpointError, read_archive
from .checkpoints import (PLAIN_HISTORY_KEYS, load_mmengine_checkpoint, plain_checkpoint,
                          read_plain, restore_message_hub, route_mmengine_loading)

__all__ = ['UnsafeCheckpointError', 'read_archive', 'read_plain', 'load_mmengine_checkpoint',
           'plain_checkpoint', 'restore_message_hub', 'route_mmengine_loading',
           'PLAIN_HISTORY_KEYS']
