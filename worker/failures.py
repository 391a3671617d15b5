"""What a user is told when a run, a client task, a data check or a gallery fails: a short message that says what
to do, never a server path, SQL, its parameters or what a folder holds. The full exception goes to the log."""

from __future__ import annotations

import traceback

from kombu.exceptions import OperationalError as BrokerUnreachable
from redis.exceptions import ConnectionError as RedisUnreachable
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from worker.engine.data import DataError

# PostgreSQL SQLSTATEs of a database too busy to answer now: lock not available, deadlock, serialization failure,
# query cancelled (a statement or lock timeout).
_BUSY_STATES = frozenset({"55P03", "40P01", "40001", "57014"})


class Reported(RuntimeError):
    """An error whose message fedlens wrote for the user (no paths, no data): shown with its name."""


def _raised_by_engine(error: BaseException) -> bool:
    """A ValueError the engine itself raised ("cannot aggregate: ..."): its text is fedlens's own, about the
    config or the maths, unlike one a library raises from inside (which may quote a file)."""
    frames = [frame for frame, _line in traceback.walk_tb(error.__traceback__)]
    module = str(frames[-1].f_globals.get("__name__", "")) if frames else ""
    return isinstance(error, ValueError) and module.startswith("worker.engine.")


def _busy(error: OperationalError) -> bool:
    """SQLite's 'database is locked' or 'busy', or a PostgreSQL lock or timeout state."""
    state = getattr(error.orig, "sqlstate", None)
    return state in _BUSY_STATES or any(word in str(error.orig).lower() for word in ("locked", "busy"))


def user_message(error: BaseException) -> str:
    """The message to store and show for ``error``; log the exception itself beside it."""
    if isinstance(error, DataError):  # written for the user, and checked against the data roots
        return f"data error in {error.field}: {error}" if error.field else f"data error: {error}"
    if isinstance(error, Reported) or _raised_by_engine(error):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, OperationalError) and _busy(error):
        return "the database was busy; resume the run once it answers again (the server log has the details)"
    if isinstance(error, SQLAlchemyError):
        return "the database refused a write; resume the run once it is healthy (the server log has the details)"
    if isinstance(error, MemoryError):
        return "a worker ran out of memory; lower data.image_size or the number of images, or give it more memory"
    if isinstance(error, BrokerUnreachable | RedisUnreachable | ConnectionError):
        return "the broker (Redis) could not be reached; resume the run once it is back"
    if isinstance(error, OSError):
        return "a file of the run could not be read or written; check the artifacts folder's free space and rights"
    return f"internal error ({type(error).__name__}); the server log has the details"
