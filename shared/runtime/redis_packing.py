"""Commands packed by hiredis on the asyncio client, as redis-py's sync client already does.

redis-py 8's asyncio connections pack every command in Python (encode each argument, join
the RESP frame): about 29 µs for one task's XADD here, against 4 µs in hiredis's C packer
(hiredis comes with redis[hiredis], a core dependency). An argument hiredis does not take
(bool, None, bytearray...) goes to redis-py's own packer, so errors and encodings stay
redis-py's.
"""

from __future__ import annotations

from typing import Any

from hiredis import pack_command as _pack
from redis.asyncio.connection import AbstractConnection

_made: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def hiredis_packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """`cls` (plain, TLS or Unix socket) with its commands packed by hiredis."""
    if cls not in _made:

        def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
            command = args[0]
            if isinstance(command, str):  # "CONFIG GET": the server wants two arguments
                args = (*command.encode().split(), *args[1:])
            elif b" " in command:
                args = (*command.split(), *args[1:])
            try:
                return [_pack(args)]
            except TypeError:
                return cls.pack_command(self, *args)

        _made[cls] = type(cls.__name__, (cls,), {"pack_command": pack_command})
    return _made[cls]
