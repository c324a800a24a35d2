"""``bindings.localstorage``: files under one root directory, as Dapr's binding keeps them.

Operations (request metadata ``fileName``, exact case, names the file):

* ``create``: writes ``data``; a JSON string arrives quoted and is unquoted first (Go's
  ``strconv.Unquote``), then decoded when it is valid standard base64 (Dapr detects
  base64 by trying, so "abcd" is stored as 3 bytes). No ``fileName``: a random UUID.
  Returns ``{"fileName": "<path relative to rootPath>"}``.
* ``get``: the file's bytes, as stored.
* ``list``: JSON array of the absolute paths of the non-directories under ``fileName``
  (default: the root), depth first in name order, symlinks not followed; ``null`` when
  there are none, as Go encodes an empty list.
* ``delete``: removes the file (or an empty directory); no response body.

A name never leaves the root: one that could (``..`` past the root, an absolute name, a
symlink whose target lies outside, a NUL byte) is refused, where Dapr
(filepath-securejoin) quietly resolves it inside the root instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import stat
import uuid

from ...config.manifests import Component
from ..registry import Context
from . import BindingError, BindingResponse, MetadataReader, OutputBinding, UnsupportedOperation

DISALLOWED_ROOTS = ("/proc", "/sys", "/boot", "/var/run/secrets")
MAX_SYMLINKS = 255


def go_json(value) -> bytes:
    """Compact JSON the way Go's encoding/json writes it (``<``, ``>``, ``&``, U+2028/9 escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text.encode()


def _display(path: str) -> str:
    """A path as Go prints it: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def _go_error(op: str, path: str, exc: OSError) -> str:
    """Go's *PathError text, e.g. "open /x: no such file or directory"."""
    reason = exc.strerror or str(exc)
    return f"{op} {_display(path)}: {reason[:1].lower()}{reason[1:]}"


_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def go_unquote(data: bytes) -> bytes | None:
    """Go's ``strconv.Unquote`` on UTF-8 bytes; None where Go returns an error.

    ``\\xNN`` and octal escapes stand for raw bytes, ``\\u``/``\\U`` for UTF-8 runes.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 2 or text[0] != text[-1] or text[0] not in "\"'`":
        return None
    quote, body = text[0], text[1:-1]
    if quote == "`":
        return None if "`" in body else body.replace("\r", "").encode()
    out = bytearray()
    runes = 0
    i = 0
    while i < len(body):
        ch = body[i]
        runes += 1
        if ch == quote or ch == "\n":
            return None
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        esc = body[i + 1:i + 2]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc == quote:
            out += esc.encode()
        elif esc and esc in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i:i + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                return None
            value = int(digits, 16)
            i += size
            if esc == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                return None
            else:
                out += chr(value).encode()
        elif esc and esc in "01234567":
            digits = body[i - 1:i + 2]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                return None
            i += 2
            out.append(int(digits, 8))
        else:
            return None
    if quote == "'" and runes != 1:
        return None
    return bytes(out)


def _b64_std(data: bytes) -> bytes | None:
    """Go's ``base64.StdEncoding.DecodeString`` (padding required, CR/LF ignored); None if invalid."""
    cleaned = data.replace(b"\r", b"").replace(b"\n", b"")
    if len(cleaned) % 4:
        return None
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


def validate_root(root: str) -> str:
    """Dapr's rootPath check: made absolute, symlinks in its existing part resolved, no system path."""
    if not root:
        raise ValueError("property rootPath must not be empty")
    root = os.path.abspath(root)
    check = root
    while check != "/":
        try:
            st = os.stat(check)
        except FileNotFoundError:
            check = os.path.dirname(check)
            continue
        except OSError as exc:
            raise ValueError(f"error getting stat for path {check}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError("property rootPath represents a file and not a directory")
        break
    resolved = os.path.normpath(os.path.join(os.path.realpath(check), root[len(check):].lstrip("/")))
    for bad in DISALLOWED_ROOTS:
        if resolved == bad or resolved.startswith(bad + "/"):
            raise ValueError("property rootPath points to a disallowed location")
    return resolved


def secure_join(root: str, name: str) -> str:
    """The path of ``name`` under ``root``, refusing every name that could leave it.

    Refused (ValueError): NUL bytes, absolute names, ``..`` segments, and names whose real
    location, symlinks followed, is outside ``root``. daprd instead resolves such names
    inside the root; refusing them makes a mistake or an attack visible.
    """
    if "\x00" in name:
        raise ValueError("invalid argument")
    if os.path.isabs(name):
        raise ValueError(f"absolute path {name!r} is not allowed: names are relative to rootPath")
    if ".." in name.replace("\\", "/").split("/"):
        raise ValueError(f"path {name!r} would leave rootPath")
    full = os.path.join(root, name)
    real_root = os.path.realpath(root)
    real = os.path.realpath(full)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise ValueError(f"path {name!r} leads outside rootPath")
    return full


class LocalStorageBinding(OutputBinding):
    """A ``bindings.localstorage`` component; see the module docstring for its operations."""

    def __init__(self, component: Component, context: Context):
        reader = MetadataReader(component)
        self.name = component.name
        try:
            self.root = validate_root(reader.get("rootPath") or "")
        except ValueError as exc:
            reader.fail("rootPath", f"a directory for the binding's files ({exc})")
        try:
            os.makedirs(self.root, 0o777, exist_ok=True)
        except OSError as exc:
            reader.fail("rootPath", f"a directory the sidecar can create: unable to create directory "
                                    f"specified by 'rootPath' {self.root}: {exc.strerror or exc}")

    def operations(self) -> list[str]:
        return ["create", "get", "list", "delete"]

    async def invoke(self, operation: str, data: bytes, metadata: dict[str, str]) -> BindingResponse:
        name = metadata.get("fileName", "")
        if operation == "create":
            return await asyncio.to_thread(self._create, name or str(uuid.uuid4()), data)
        if operation == "get":
            return await asyncio.to_thread(self._get, name)
        if operation == "delete":
            return await asyncio.to_thread(self._delete, name)
        if operation == "list":
            return await asyncio.to_thread(self._list, name)
        raise UnsupportedOperation(f"unsupported operation {operation}")

    def _resolve(self, name: str) -> str:
        try:
            return secure_join(self.root, name)
        except ValueError as exc:
            raise BindingError(f"error getting absolute path for file {name}: {exc}") from None
        except OSError as exc:
            raise BindingError(f"error getting absolute path for file {name}: "
                               f"{_go_error('lstat', exc.filename or name, exc)}") from None

    def _create(self, name: str, data: bytes) -> BindingResponse:
        unquoted = go_unquote(data)
        if unquoted is not None:
            data = unquoted
        decoded = _b64_std(data)
        if decoded is not None:
            data = decoded
        path = self._resolve(name)
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, 0o777, exist_ok=True)
        except OSError as exc:
            raise BindingError(f"error creating directory {_display(directory)}: "
                               f"{_go_error('mkdir', exc.filename or directory, exc)}") from None
        try:
            # O_NOFOLLOW: a symlink swapped in after resolving must not redirect the write.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise BindingError(f"error creating file {_display(path)}: {_go_error('open', path, exc)}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise BindingError(f"error writing to file {_display(path)}: {_go_error('write', path, exc)}") from None
        return BindingResponse(go_json({"fileName": _display(os.path.relpath(path, self.root))}))

    def _get(self, name: str) -> BindingResponse:
        path = self._resolve(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BindingError(f"file not found: {_display(path)}") from None
        except OSError as exc:
            raise BindingError(f"error opening path {_display(path)}: {_go_error('open', path, exc)}") from None
        try:
            with os.fdopen(fd, "rb") as f:
                return BindingResponse(f.read())
        except OSError as exc:
            raise BindingError(f"error reading file {_display(path)}: {_go_error('read', path, exc)}") from None

    def _delete(self, name: str) -> BindingResponse:
        path = self._resolve(name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError as exc:
            raise BindingError(f"error deleting file {_display(path)}: {_go_error('remove', path, exc)}") from None
        return BindingResponse()

    def _list(self, name: str) -> BindingResponse:
        path = self._resolve(name)
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as exc:
            raise BindingError(f"error getting stats for path {_display(path)}: {_go_error('stat', path, exc)}") from None
        if not is_dir:
            raise BindingError(f"unable to list files as the file specified is not a directory: {_display(path)}")
        files: list[str] = []
        _walk(path, files)
        return BindingResponse(go_json([_display(f) for f in files] or None))


def _walk(directory: str, files: list[str]) -> None:
    """Go's filepath.Walk order: names sorted byte-wise, symlinks listed, not followed."""
    try:
        names = sorted(os.listdir(directory), key=os.fsencode)
    except OSError:
        return  # Go's Walk skips an unreadable directory here
    for entry in names:
        full = os.path.join(directory, entry)
        try:
            is_dir = os.path.isdir(full) and not os.path.islink(full)
        except OSError:
            continue
        if is_dir:
            _walk(full, files)
        else:
            files.append(full)
