"""The logging of the ``wirebus`` command: one handler on stderr, text or JSON.

The command line is the application here, so it decides what third-party
loggers say (the library itself never sets a level). aiokafka talks a lot at
INFO (every join, assignment and fetch session) and logs at ERROR what is
normal while a consumer group forms (``GroupCoordinatorNotAvailableError``:
the broker is still electing the group's coordinator, and aiokafka retries).
On a fresh broker it also warns while it forms the group's coordinator
(``Marking the coordinator dead``: it finds the coordinator again) and while a
topic just created is not in the broker's metadata yet (``Topic ... not found
in cluster metadata``, ``No partition metadata for topic ...``: wirebus creates
its topics and waits for them). Alembic writes a dozen INFO lines on every
start (its plugins, the SQLite context) around the one that matters, and
uvicorn (``--connect-port``) its start and stop on a logger named
``uvicorn.error``. So, unless ``--log-level debug``:

- aiokafka's, Alembic's and uvicorn's records below WARNING are not written;
- its ERROR records about a coordinator that is not there *yet* (a retriable
  coordinator error), and the records above about a coordinator or a topic
  aiokafka looks up again, become INFO records, and so are not written either.

Example::

    configure_logging("info", "text")
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
    )  # nothing written
"""

from __future__ import annotations

import logging

__all__ = ["StartupNoiseFilter", "configure_logging"]

_AIOKAFKA = "aiokafka"
# uvicorn (the Connect port) writes its start and stop at INFO on "uvicorn.error".
_QUIET = (_AIOKAFKA, "alembic", "uvicorn")
# Retriable: the group's coordinator is being elected or loaded; aiokafka tries again.
_COORDINATOR_NOT_READY = frozenset(
    {
        "GroupCoordinatorNotAvailableError",
        "CoordinatorNotAvailableError",
        "NotCoordinatorForGroupError",
        "NotCoordinatorError",
        "CoordinatorLoadInProgressError",
    }
)
# aiokafka's own messages (its format strings) for what it retries by itself.
_RETRIED = frozenset(
    {
        "Marking the coordinator dead (node %s)for group %s.",
        "Topic %s not found in cluster metadata",
        "Topic %s is not available during auto-create initialization",
        "No partition metadata for topic %s",
        "No partition metadata for topic %r",
    }
)
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class StartupNoiseFilter(logging.Filter):
    """A handler filter: aiokafka's, Alembic's and uvicorn's records below ``threshold`` dropped,
    aiokafka's coordinator errors while a group forms, and its warnings about what
    it looks up again, demoted to INFO first (on the handler, since a logger's own
    filters do not see its children's records).

    Example::

        handler.addFilter(StartupNoiseFilter(logging.WARNING))
    """

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        top = record.name.partition(".")[0]
        if top not in _QUIET:
            return True
        if top == _AIOKAFKA and record.levelno >= logging.WARNING and _retried(record):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return record.levelno >= self.threshold


def _retried(record: logging.LogRecord) -> bool:
    if isinstance(record.msg, str) and record.msg in _RETRIED:
        return True
    return record.levelno == logging.ERROR and _coordinator_not_ready(record)


def _coordinator_not_ready(record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else (record.args,)
    if any(type(arg).__name__ in _COORDINATOR_NOT_READY for arg in args):
        return True
    message = record.msg if isinstance(record.msg, str) else ""
    return any(name in message for name in _COORDINATOR_NOT_READY)


def configure_logging(level: str, log_format: str = "text") -> logging.Handler:
    """Write records of ``level`` and above to stderr, one line each; return the handler.

    ``log_format="json"``: each line one JSON object
    (:class:`wirebus.access_log.JsonFormatter`).
    """
    handler = logging.StreamHandler()
    if log_format == "json":
        from .access_log import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_FORMAT))
    threshold = logging.DEBUG if level == "debug" else logging.WARNING
    handler.addFilter(StartupNoiseFilter(threshold))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    return handler
