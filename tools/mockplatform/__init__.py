"""A mock of China Mobile OneNET's OTA platform, south side, on a real HTTP/1.1 socket.

It behaves like the platform the device talks to (``shared/spec/onenet-ota-south-api.md``):
every south endpoint at its exact path, the task state machine, Authorization signatures
with expiry, OneNET's Range rules, keep-alive; plus switchable faults, and a record of every
request so that a test can assert what the device did, in order.

In a test::

    from tools.mockplatform import MockPlatform

    with MockPlatform(product_id="123456", access_key=KEY, port=0) as platform:
        platform.add_device("1234", unique_id="aabbcc", f_version="1.0")
        task = platform.add_task("1234", package=b"..." or Path(...), target="1.1",
                                 ota_type=1, package_type=1, ip_port="auto")
        platform.faults.drop_at = [65536]          # or platform.set_fault("drop", 65536)
        platform.set_fault("task-data", {"size": -1})  # malformed task data in check/tasking
        ...run the device against platform.url (or platform.host / platform.port)...
        assert task.history == ["to-be-upgraded", "downloading", "upgrading", "completed"]
        assert task.reports == [(101, 0), (201, 0)]   # (result code, errno answered)
        assert platform.sequence()[:2] == ["version_report", "check"]
        assert platform.connections == 1

Record: ``platform.requests`` holds ``server.Request`` objects (``connection``, ``method``,
``path``, ``query`` dict, ``headers`` with lower-case names, ``body`` bytes, ``time``, the
``endpoint`` name, and the ``status``/``errno`` answered, ``note`` saying why a request was
refused); ``platform.connections`` counts TCP connections accepted; ``platform.errors`` holds
exceptions inside the mock (a bug there, not in the device). Each task keeps ``state``,
``history`` (every state in order), ``log`` (time, state, reason), ``reports`` and ``progress``
(value, errno answered), ``token``, ``size``, ``md5``; ``expire()``, ``cancel()``, ``pause()``,
``resume()`` act on it as an operator of the platform would.

Endpoint names (used in the record and to aim faults): ``version_report`` (1),
``version_query`` (8), ``check`` (2), ``token_check`` (3), ``download`` (4), ``progress`` (5),
``report`` (6), ``tasking`` (7), ``dev_info`` (9); ``unknown`` (404) and
``method_not_allowed`` (405) for anything else.

Decisions where the docs are silent (details where they are made):

* a missing or malformed query parameter is errno 2 on every endpoint; an unknown ``dev_id``,
  token, ``pid`` or ``authInfo`` is errno 4 (``api.py``);
* a bad ``report``/``progress`` body is 24, a bad version-report body 2 (``api.py``);
* a token that may not download gets HTTP 404 with the errno a token check would give
  (4, 12, 17, 20, 22) (``core.py``);
* Range: only the first range of a list is served, an unusable header is ignored (200),
  ``bytes=-0`` is the whole file (``download.py``);
* a failed or paused task answers reports with 21, token checks with 17; an expired token
  turns its task ``expired`` (``state.py``).

The rest is written where it is made:
errno rules in ``api.py``, states in ``state.py``, Range and download in ``download.py`` and
``core.py``, faults in ``faults.py``. Standalone: ``python -m tools serve --help``.
"""
from .core import DEFAULT_ACCESS_KEY, DEFAULT_PRODUCT_ID, MockPlatform
from .faults import ENDPOINTS, FAULT_NAMES, Faults
from .server import Request
from .state import (CANCELLED, COMPLETED, DELTA_PACKAGE, DOWNLOADING, EXPIRED, FAILED, FOTA,
                    FULL_PACKAGE, PAUSED, SOTA, TO_BE_UPGRADED, UPGRADING, Device, Errno, Task)

__all__ = [
    "MockPlatform", "DEFAULT_ACCESS_KEY", "DEFAULT_PRODUCT_ID", "Faults", "ENDPOINTS",
    "FAULT_NAMES", "Request", "Device", "Task", "Errno", "FOTA", "SOTA", "FULL_PACKAGE",
    "DELTA_PACKAGE", "TO_BE_UPGRADED", "DOWNLOADING", "UPGRADING", "COMPLETED", "FAILED",
    "CANCELLED", "PAUSED", "EXPIRED",
]
