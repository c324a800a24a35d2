"""Log line formats: daprd's logfmt-like text, JSON lines, and text for the journal.

When stderr is the journal (systemd sets ``JOURNAL_STREAM`` to the ``device:inode`` of
that stream, see systemd.exec(5)), journald stamps each line with its own time and reads
a leading ``<N>`` as the syslog priority, so the journal format drops the time and
carries the level that way. ``--log-as-json`` keeps JSON lines everywhere.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TextIO

# syslog priorities (sd-daemon(3)'s SD_DEBUG ... SD_CRIT) by logging level.
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """daprd's logfmt-like lines: time, level, msg, app_id, scope."""

    def __init__(self, app_id: str):
        super().__init__()
        self.app_id = app_id

    def message(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return msg

    def format(self, record: logging.LogRecord) -> str:
        return (f'time="{_timestamp(record)}" level={record.levelname.lower()} msg={json.dumps(self.message(record))}'
                f" app_id={self.app_id} scope={record.name}")


class JsonFormatter(TextFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": _timestamp(record), "level": record.levelname.lower(), "msg": self.message(record),
                           "app_id": self.app_id, "scope": record.name})


class JournalFormatter(TextFormatter):
    """The text format for journald: ``<N>`` priority prefix, no time (the journal has it)."""

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno)
        if priority is None:  # custom levels: the nearest standard one at or below
            priority = next((p for level, p in sorted(SYSLOG_PRIORITY.items(), reverse=True)
                             if record.levelno >= level), 7)
        return (f"<{priority}>level={record.levelname.lower()} msg={json.dumps(self.message(record))}"
                f" app_id={self.app_id} scope={record.name}")


def is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd named in ``JOURNAL_STREAM``."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def formatter_for(app_id: str, as_json: bool, stream: TextIO) -> logging.Formatter:
    if as_json:
        return JsonFormatter(app_id)
    return JournalFormatter(app_id) if is_journal(stream) else TextFormatter(app_id)
