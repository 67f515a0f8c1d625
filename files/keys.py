"""The master key that wraps every file's data key: FILE_MASTER_KEY (64 hex characters), or
in development and test one made once per data folder (FILE_STORAGE_DIR/.master-key, 0600),
so `make run` works with no set-up and a restart can still read what it stored."""

from __future__ import annotations

import os
import secrets

from settings import Settings


def master_key(settings: Settings) -> bytes:
    if settings.file_master_key is not None:
        return bytes.fromhex(settings.file_master_key.get_secret_value())
    assert settings.is_development, "settings refuse production without FILE_MASTER_KEY"
    folder = settings.file_storage_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / ".master-key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        key = secrets.token_hex(32)
        f.write(key)
    return bytes.fromhex(key)
