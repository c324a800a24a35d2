"""Reading the text files a user hands Pillion (resources, password and ACL files)."""

from __future__ import annotations

from ..errors import ConfigError


def read_text(path: str, decode_field: str = "(file)") -> str:
    """The file's UTF-8 text (a leading BOM dropped); ConfigError naming the file otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(path, None, "(file)", f"a readable file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, decode_field, f"UTF-8 text (bad byte at offset {exc.start})") from None
