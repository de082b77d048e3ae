"""Layer 2: the durable, ordered hand-off between collectors and loaders."""

from gristmill.log.base import EventLog, LogBatch, LogEntry, LogFull, LogRecord, LogSnapshot
from gristmill.log.registry import open_log

__all__ = [
    "EventLog",
    "LogBatch",
    "LogEntry",
    "LogFull",
    "LogRecord",
    "LogSnapshot",
    "open_log",
]
