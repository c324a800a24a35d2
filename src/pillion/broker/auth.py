"""Broker authentication (password file) and authorization (ACL file); sans-IO.

Password file, one user a line; blank lines and ``#`` comments are kept::

    alice:$scrypt$16384$8$1$<salt base64>$<hash base64>
    bob:$pbkdf2-sha256$600000$<salt base64>$<hash base64>

ACL file, mosquitto-like; blank lines and ``#`` comments allowed::

    # before any user line: clients that sent no username
    topic read public/#
    user alice
    topic readwrite alice/#
    topic deny alice/secret/#
    # every client; %c is its client id, %u its username
    pattern write devices/%c/state

The access word is ``read``, ``write``, ``readwrite`` (the default) or ``deny``; the
rest of the line is the filter (a ``#`` there is a wildcard, not a comment). With an
ACL everything not allowed is refused, and a ``deny`` rule beats any allow.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from typing import NamedTuple

from ..config.files import read_text
from ..errors import ConfigError
from .topics import parse_filter, validate_filter

__all__ = [
    "DEFAULT_SCHEME",
    "Acl",
    "PasswordFile",
    "delete_user",
    "filters_intersect",
    "filters_overlap",
    "hash_password",
    "set_password",
]

HAS_SCRYPT = hasattr(hashlib, "scrypt")
DEFAULT_SCHEME = "scrypt" if HAS_SCRYPT else "pbkdf2-sha256"

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
PBKDF2_ITERATIONS = 600_000
SALT_BYTES = 16
HASH_BYTES = 32

# A password file is trusted input, but a typo in N should not eat the host's memory.
_SCRYPT_MAX_MEMORY = 256 * 1024 * 1024
_SCRYPT_MAX_P = 16
_PBKDF2_MAX_ITERATIONS = 100_000_000
_MIN_SALT_BYTES = 8
_MIN_HASH_BYTES = 16
_MAX_HASH_BYTES = 64


# ---- password hashes ---------------------------------------------------------


class _Hash(NamedTuple):
    scheme: str
    params: tuple[int, ...]  # scrypt: (n, r, p); pbkdf2-sha256: (iterations,)
    salt: bytes
    digest: bytes


def _scrypt_memory(n: int, r: int, p: int) -> int:
    """Bytes OpenSSL's scrypt needs (its maxmem check), plus slack for rounding."""
    return 128 * r * (n + p + 2) + 1024 * 1024


def _check_scrypt_params(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt N must be a power of 2 above 1, not {n}")
    if r < 1 or not 1 <= p <= _SCRYPT_MAX_P:
        raise ValueError(f"scrypt needs r >= 1 and 1 <= p <= {_SCRYPT_MAX_P} (r={r}, p={p})")
    if _scrypt_memory(n, r, p) > _SCRYPT_MAX_MEMORY:
        raise ValueError(f"scrypt N={n}, r={r} needs more than {_SCRYPT_MAX_MEMORY >> 20} MiB")


def _check_iterations(iterations: int) -> None:
    if not 1 <= iterations <= _PBKDF2_MAX_ITERATIONS:
        raise ValueError(f"pbkdf2 iterations must be 1..{_PBKDF2_MAX_ITERATIONS}, not {iterations}")


def _derive(record: _Hash, password: bytes) -> bytes:
    if record.scheme == "scrypt":
        n, r, p = record.params
        return hashlib.scrypt(
            password, salt=record.salt, n=n, r=r, p=p,
            maxmem=_scrypt_memory(n, r, p), dklen=len(record.digest),
        )
    (iterations,) = record.params
    return hashlib.pbkdf2_hmac("sha256", password, record.salt, iterations, dklen=len(record.digest))


def _verify(record: _Hash, password: bytes) -> bool:
    return hmac.compare_digest(_derive(record, password), record.digest)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _format(record: _Hash) -> str:
    params = "$".join(str(value) for value in record.params)
    return f"${record.scheme}${params}${_b64(record.salt)}${_b64(record.digest)}"


def hash_password(
    password: str,
    scheme: str = "scrypt",
    *,
    n: int = SCRYPT_N,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
    iterations: int = PBKDF2_ITERATIONS,
) -> str:
    """The ``$scheme$...`` string stored after ``username:`` in a password file.

    ``scheme`` is ``"scrypt"`` (falls back to ``"pbkdf2-sha256"`` when this Python's
    hashlib lacks scrypt) or ``"pbkdf2-sha256"``. The cost keywords trade login latency
    for resistance to offline guessing; the defaults cost about 50 ms per check.

    Raises:
        ValueError: unknown scheme or out-of-range cost parameters.
    """
    if scheme == "scrypt" and not HAS_SCRYPT:
        scheme = "pbkdf2-sha256"
    if scheme == "scrypt":
        _check_scrypt_params(n, r, p)
        params: tuple[int, ...] = (n, r, p)
    elif scheme == "pbkdf2-sha256":
        _check_iterations(iterations)
        params = (iterations,)
    else:
        raise ValueError(f"unknown password scheme {scheme!r} (scrypt or pbkdf2-sha256)")
    salt = secrets.token_bytes(SALT_BYTES)
    record = _Hash(scheme, params, salt, b"\0" * HASH_BYTES)
    return _format(record._replace(digest=_derive(record, password.encode("utf-8"))))


_HASH_SHAPES = "$scrypt$N$r$p$<salt b64>$<hash b64> or $pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>"


def _decode_b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} in base64, not {text!r}") from None


def _parse_hash(encoded: str) -> _Hash:
    """Parse ``$scheme$...``; ValueError says what was expected."""
    parts = encoded.split("$")
    if len(parts) < 2 or parts[0]:
        raise ValueError(f"username:<hash> with a hash like {_HASH_SHAPES}")
    scheme = parts[1]
    if scheme == "scrypt":
        if not HAS_SCRYPT:
            raise ValueError("a $pbkdf2-sha256$ hash (this Python's hashlib has no scrypt)")
        if len(parts) != 7:
            raise ValueError("$scrypt$N$r$p$<salt b64>$<hash b64>")
        raw_params, salt_text, digest_text = parts[2:5], parts[5], parts[6]
    elif scheme == "pbkdf2-sha256":
        if len(parts) != 5:
            raise ValueError("$pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>")
        raw_params, salt_text, digest_text = parts[2:3], parts[3], parts[4]
    else:
        raise ValueError(f"a known scheme ($scrypt$ or $pbkdf2-sha256$), not ${scheme}$")
    if not all(text.isascii() and text.isdigit() for text in raw_params):
        raise ValueError(f"decimal integer cost parameters for ${scheme}$, not {'$'.join(raw_params)}")
    params = tuple(int(text) for text in raw_params)
    if scheme == "scrypt":
        _check_scrypt_params(*params)
    else:
        _check_iterations(*params)
    salt = _decode_b64(salt_text, "a salt")
    digest = _decode_b64(digest_text, "a hash")
    if len(salt) < _MIN_SALT_BYTES:
        raise ValueError(f"a salt of at least {_MIN_SALT_BYTES} bytes, not {len(salt)}")
    if not _MIN_HASH_BYTES <= len(digest) <= _MAX_HASH_BYTES:
        raise ValueError(f"a hash of {_MIN_HASH_BYTES}..{_MAX_HASH_BYTES} bytes, not {len(digest)}")
    return _Hash(scheme, params, salt, digest)


def _content_lines(text: str):
    """``(line number, stripped line)`` for every line that is not blank or a comment.

    Splits on ``\\n`` only: ``str.splitlines`` would also split on characters a
    username may legally contain.
    """
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


class PasswordFile:
    """Users and password hashes loaded from a password file.

    ``check`` derives a key on purpose slowly (about 50 ms with the default scrypt
    cost), so a broker must call it off the event loop (``run_in_executor``). It only
    reads immutable data, so any number of threads may call it at once.
    """

    def __init__(self, users: dict[str, _Hash]):
        self._users = users
        self._dummy = _dummy_like(users.values())

    @classmethod
    def load(cls, path: str) -> "PasswordFile":
        """Read ``path``.

        Raises:
            ConfigError: the file is missing or unreadable, or a line (named by number)
                is malformed, uses an unknown scheme or repeats a username.
        """
        return cls.parse(read_text(path), path)

    @classmethod
    def parse(cls, text: str, source: str = "<password file>") -> "PasswordFile":
        """Parse password file contents; ``source`` names the file in errors."""
        users: dict[str, _Hash] = {}
        first_seen: dict[str, int] = {}
        for number, line in _content_lines(text):
            username, sep, encoded = line.partition(":")
            if not sep or not username:
                raise ConfigError(source, None, f"line {number}", f"username:<hash> with a hash like {_HASH_SHAPES}")
            if username in users:
                raise ConfigError(
                    source, None, f"line {number}",
                    f"each username once ({username!r} is also on line {first_seen[username]})",
                )
            try:
                users[username] = _parse_hash(encoded)
            except ValueError as exc:
                raise ConfigError(source, None, f"line {number}", str(exc)) from None
            first_seen[username] = number
        return cls(users)

    def __len__(self) -> int:
        return len(self._users)

    def check(self, username: str | None, password: bytes | None) -> bool:
        """True when ``username`` exists and ``password`` is its password.

        An unknown user costs one key derivation against a dummy hash, the same work as
        a known one, so response time does not reveal which usernames exist.
        """
        if username is None or password is None:
            return False
        record = self._users.get(username)
        if record is None:
            _verify(self._dummy, password)
            return False
        return _verify(record, password)


def _dummy_like(records) -> _Hash:
    """A hash no password matches, with the cost most entries of the file use."""
    shapes = collections.Counter(
        (record.scheme, record.params, len(record.salt), len(record.digest)) for record in records
    )
    if shapes:
        (scheme, params, salt_len, digest_len), _ = shapes.most_common(1)[0]
    elif HAS_SCRYPT:
        scheme, params, salt_len, digest_len = "scrypt", (SCRYPT_N, SCRYPT_R, SCRYPT_P), SALT_BYTES, HASH_BYTES
    else:
        scheme, params, salt_len, digest_len = "pbkdf2-sha256", (PBKDF2_ITERATIONS,), SALT_BYTES, HASH_BYTES
    return _Hash(scheme, params, secrets.token_bytes(salt_len), secrets.token_bytes(digest_len))


# ---- password file editing ----------------------------------------------------


def _check_username(username: str) -> None:
    if not username:
        raise ValueError("username is empty")
    if any(ch in username for ch in ":\n\r\0"):
        raise ValueError(f"username {username!r} contains ':', a line break or U+0000")
    if username.startswith("#") or username != username.strip():
        raise ValueError(f"username {username!r} starts with '#' or with or ends in whitespace")


def _line_username(raw: str) -> str | None:
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    return line.partition(":")[0]


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _replace_file(path: str, lines: list[str]) -> None:
    """Write ``lines`` to a temporary file beside ``path`` (mode 0600) and rename it over."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".pillion-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def set_password(path: str, username: str, password: str, scheme: str = "scrypt", **cost: int) -> None:
    """Add ``username`` or replace its hash, keeping every other line and comment.

    Creates the file when missing. ``cost`` takes ``hash_password``'s keywords.

    Raises:
        ValueError: the username is empty, contains ':' or a line break, starts with
            '#' or has surrounding whitespace; or ``hash_password`` refused.
    """
    _check_username(username)
    entry = f"{username}:{hash_password(password, scheme, **cost)}"
    try:
        lines = _read_lines(path)
    except FileNotFoundError:
        lines = []
    for index, raw in enumerate(lines):
        if _line_username(raw) == username:
            lines[index] = entry
            break
    else:
        lines.append(entry)
    _replace_file(path, lines)


def delete_user(path: str, username: str) -> bool:
    """Remove ``username``'s line; False (file untouched) when it was not there.

    Raises:
        ValueError: not a username ``set_password`` would accept.
        OSError: the file cannot be read or replaced.
    """
    _check_username(username)
    lines = _read_lines(path)
    kept = [raw for raw in lines if _line_username(raw) != username]
    if len(kept) == len(lines):
        return False
    _replace_file(path, kept)
    return True


# ---- topic filter algebra -------------------------------------------------------

Levels = tuple[str, ...]

# U+0000 is forbidden in topics and filters, so no rule can name this level literally.
_FRESH_LEVEL = "\0"


def _matches(filter_levels: Levels, topic_levels: Levels | list[str]) -> bool:
    """MQTT matching on pre-split levels; a leading wildcard skips ``$`` topics (§4.7.2)."""
    if topic_levels[0][:1] == "$" and filter_levels[0] in ("+", "#"):
        return False
    count = len(topic_levels)
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= count or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == count


def _excluded_at_root(index: int, other: str) -> bool:
    """A wildcard in the first level never meets a ``$`` level there."""
    return index == 0 and other[:1] == "$" and other not in ("+", "#")


def _intersect(a: Levels, b: Levels) -> Levels | None:
    """The filter matching exactly the topics both ``a`` and ``b`` match, or None."""
    out: list[str] = []
    for index in range(max(len(a), len(b))):
        level_a = a[index] if index < len(a) else None
        level_b = b[index] if index < len(b) else None
        if level_a == "#" or level_b == "#":
            rest = b[index:] if level_a == "#" else a[index:]
            if rest and _excluded_at_root(index, rest[0]):
                return None
            return _nonempty(tuple(out) + rest)
        if level_a is None or level_b is None:
            return None
        if level_a == "+":
            if _excluded_at_root(index, level_b):
                return None
            out.append(level_b)
        elif level_b == "+":
            if _excluded_at_root(index, level_a):
                return None
            out.append(level_a)
        elif level_a == level_b:
            out.append(level_a)
        else:
            return None
    return _nonempty(tuple(out))


def _nonempty(levels: Levels) -> Levels | None:
    """None for the one level-list no topic has: a single empty level (topic ``""``)."""
    return None if levels == ("",) else levels


def _covered(levels: Levels, cover: list[Levels]) -> bool:
    """True when every topic ``levels`` matches is matched by some filter in ``cover``.

    Levels are an unbounded alphabet, so a level no filter names stands for every
    wildcard position: if the topics built from it are covered, all are. After a
    trailing ``#``, lengths beyond the longest cover filter behave alike.
    """
    if not cover:
        return False
    witness = [_FRESH_LEVEL if level == "+" else level for level in levels]
    if not levels or levels[-1] != "#":
        return any(_matches(rule, witness) for rule in cover)
    prefix = witness[:-1]
    longest = max(len(rule) for rule in cover)
    for extra in range(longest + 2):
        topic = prefix + [_FRESH_LEVEL] * extra
        if topic not in ([], [""]) and not any(_matches(rule, topic) for rule in cover):
            return False
    return True


def filters_intersect(a: str, b: str) -> str | None:
    """The topic filter matching exactly the topics both valid filters match, or None."""
    levels = _intersect(tuple(a.split("/")), tuple(b.split("/")))
    return None if levels is None else "/".join(levels)


def filters_overlap(a: str, b: str) -> bool:
    """True when at least one topic name matches both valid topic filters."""
    return _intersect(tuple(a.split("/")), tuple(b.split("/"))) is not None


# ---- ACL ------------------------------------------------------------------------

ACCESS = ("read", "write", "readwrite", "deny")

_PLACEHOLDER = re.compile(r"%[cu]")
_CACHE_LIMIT = 4096


class _Rule(NamedTuple):
    access: str
    filter: str
    line: int


class _Rules(NamedTuple):
    read: list[Levels]
    write: list[Levels]
    deny: list[Levels]


def _substitutable(value: str | None) -> bool:
    """A client id or username that cannot widen a pattern (no wildcards, no levels)."""
    return bool(value) and not any(ch in value for ch in "+#/")


def _expand(pattern: str, client_id: str, username: str | None) -> str | None:
    """``pattern`` with %c/%u filled in; None when the values may not be substituted."""
    values = {"%c": client_id, "%u": username}
    for placeholder, value in values.items():
        if placeholder in pattern and not _substitutable(value):
            return None
    expanded = _PLACEHOLDER.sub(lambda match: values[match.group()], pattern)
    if expanded[:1] == "$" and pattern[:1] != "$":
        return None
    try:
        validate_filter(expanded)
    except ValueError:
        return None
    return expanded


class Acl:
    """Who may publish to and receive from which topics, loaded from an ACL file.

    A client gets the ``topic`` rules of its ``user`` section (the lines before the
    first ``user`` line when it has no username) plus every ``pattern`` rule. Anything
    no rule allows is refused, and ``deny`` wins over allow. Rules are expanded once
    per (client id, username) and cached, so the per-message checks only walk them.
    """

    def __init__(self, anonymous: list[_Rule], users: dict[str, list[_Rule]], patterns: list[_Rule]):
        self._anonymous = anonymous
        self._users = users
        self._patterns = patterns
        self._cache: dict[tuple[str, str | None], _Rules] = {}

    @classmethod
    def load(cls, path: str) -> "Acl":
        """Read ``path``.

        Raises:
            ConfigError: the file is missing or unreadable, or a line (named by number)
                has an unknown keyword, a missing name or an invalid topic filter.
        """
        return cls.parse(read_text(path), path)

    @classmethod
    def parse(cls, text: str, source: str = "<acl file>") -> "Acl":
        """Parse ACL file contents; ``source`` names the file in errors."""
        anonymous: list[_Rule] = []
        users: dict[str, list[_Rule]] = {}
        patterns: list[_Rule] = []
        section = anonymous
        for number, line in _content_lines(text):
            keyword, rest = _split_word(line)
            if keyword == "user":
                if not rest:
                    raise ConfigError(source, None, f"line {number}", "a username after 'user'")
                section = users.setdefault(rest, [])
            elif keyword in ("topic", "pattern"):
                rule = _parse_rule(source, number, keyword, rest)
                (patterns if keyword == "pattern" else section).append(rule)
            else:
                raise ConfigError(
                    source, None, f"line {number}", f"a line starting with user, topic or pattern, not {keyword!r}"
                )
        return cls(anonymous, users, patterns)

    def _rules_for(self, client_id: str, username: str | None) -> _Rules:
        key = (client_id, username)
        rules = self._cache.get(key)
        if rules is not None:
            return rules
        rules = _Rules([], [], [])
        own = self._anonymous if username is None else self._users.get(username, ())
        for rule in own:
            _add(rules, rule.access, rule.filter)
        for rule in self._patterns:
            expanded = _expand(rule.filter, client_id, username)
            if expanded is not None:
                _add(rules, rule.access, expanded)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = rules
        return rules

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        """May this client publish to ``topic`` (a valid topic name)?"""
        rules = self._rules_for(client_id, username)
        levels = topic.split("/")
        return any(_matches(rule, levels) for rule in rules.write) and not any(
            _matches(rule, levels) for rule in rules.deny
        )

    def can_receive(self, client_id: str, username: str | None, topic: str) -> bool:
        """May this client be sent a message on ``topic`` (a valid topic name)?"""
        rules = self._rules_for(client_id, username)
        levels = topic.split("/")
        return any(_matches(rule, levels) for rule in rules.read) and not any(
            _matches(rule, levels) for rule in rules.deny
        )

    def can_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """True when ``topic_filter`` matches at least one topic this client may receive.

        Exact: the filter must meet some read rule outside every ``deny`` rule.
        ``$share/{group}/`` is stripped first; an invalid filter gives False. Messages
        are still checked one by one with ``can_receive``.
        """
        try:
            _, inner = parse_filter(topic_filter)
        except ValueError:
            return False
        requested = tuple(inner.split("/"))
        rules = self._rules_for(client_id, username)
        for rule in rules.read:
            common = _intersect(requested, rule)
            if common is not None and not _covered(common, rules.deny):
                return True
        return False


def _split_word(text: str) -> tuple[str, str]:
    """The first whitespace-separated word and the stripped rest (either may be empty)."""
    parts = text.split(None, 1) + ["", ""]
    return parts[0], parts[1].strip()


def _parse_rule(source: str, number: int, keyword: str, rest: str) -> _Rule:
    head, tail = _split_word(rest)
    if head in ACCESS:
        access, topic_filter = head, tail
    else:
        access, topic_filter = "readwrite", rest
    if not topic_filter:
        raise ConfigError(source, None, f"line {number}", f"a topic filter after '{keyword}'")
    try:
        validate_filter(topic_filter)
    except ValueError as exc:
        raise ConfigError(source, None, f"line {number}", f"a valid topic filter ({exc})") from None
    return _Rule(access, topic_filter, number)


def _add(rules: _Rules, access: str, topic_filter: str) -> None:
    levels = tuple(topic_filter.split("/"))
    if access == "deny":
        rules.deny.append(levels)
        return
    if access in ("read", "readwrite"):
        rules.read.append(levels)
    if access in ("write", "readwrite"):
        rules.write.append(levels)
