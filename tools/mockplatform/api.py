"""The JSON endpoints (1-3, 5-9 of the spec): parameters, Authorization, errno.

Every answer is HTTP 200 with ``{"errno": n, "error": text}`` plus ``"data"`` where there is
some; ``error`` is ``"succ"`` for errno 0. Checked in this order, the first failure answers:

1. ``Authorization`` (all of these endpoints): missing, malformed, not URL-encoded, wrong
   signature, unknown ``res`` or ``et`` in the past -> errno 1 "token auth failed". A device-level
   key (res ``products/{pid}/devices/{name}``) only signs for its own ``dev_id`` (else 1).
2. Query parameters. **Decision** (the docs name only tasking's "bad type"): a missing or
   malformed parameter is errno 2 on every endpoint: ``dev_id`` not a number, ``type`` not 1/2,
   ``manuf``/``model`` not numeric, ``version`` not 1-20 chars of ``[A-Za-z0-9._-]``, ``cdn``
   not ``true``/``false``, ``pid``/``authInfo``/``token`` missing.
3. **Decision**: a ``dev_id`` the platform does not know is errno 4 (not found), as are an
   unknown token and a token of another device (endpoint 3 documents 4 for the latter).
4. Bodies: report (6) and progress (5) answer 24 when the body is not a JSON object or
   ``result``/``step`` is missing or not a non-negative integer; a version report (1) answers
   2 when the body is not an object with at least one valid ``f_version``/``s_version``.
5. The task state machine (``state.py``) answers the rest. A token whose lifetime is over
   makes its task ``expired``: errno 12 on 3, 5, 6 and 7.

Endpoint specifics (decisions marked):

* 2 check: answers the newest task of that device and ``type`` while it is to-be-upgraded,
  downloading or upgrading and its manuf/model match; otherwise errno 4 without data (paused,
  expired and finished tasks are not offered).
* 5 progress: steps 0..100 only while downloading (else 21; after the end 20/22/12);
  step 100 -> upgrading; a step above 100 is a result code, as endpoint 6.
* 7 tasking: the newest task of that ``type`` if open -> data; if that task's token expired
  -> 12; otherwise 4.
* 8 version query: ``data = {"f_version": .., "s_version": ..}`` as the platform holds them.
* 9 devInfo: a ``pid`` other than this product or an unknown ``authInfo`` -> 4;
  ``data = {"dev_id": <int>}``.
"""
import hashlib
import json
import time

from tools import onenet_auth

from .state import ERRORS, EXPIRED, OPEN_STATES, VERSION_FIELD, Errno, valid_version


class Refusal(Exception):
    def __init__(self, errno, note):
        super().__init__(note)
        self.errno = errno
        self.note = note


def answer(errno, data=None):
    body = {"errno": errno, "error": ERRORS.get(errno, "error %d" % errno)}
    if data is not None:
        body["data"] = data
    return body


def handle(platform, endpoint, request, token, local_address):
    """The JSON answer of ``endpoint`` to ``request``; ``request.note`` says why it refused.
    Called with the platform lock held."""
    try:
        _authenticate(platform, request)
        data = HANDLERS[endpoint](platform, request, token, local_address)
    except Refusal as refusal:
        request.note = refusal.note
        return answer(refusal.errno)
    return answer(Errno.OK, data)


def _authenticate(platform, request):
    header = request.headers.get("authorization")
    if header is None:
        raise Refusal(Errno.AUTH_FAILED, "no Authorization header")
    ok, reason = onenet_auth.verify(header, platform.keys_by_res(), time.time())
    if not ok:
        raise Refusal(Errno.AUTH_FAILED, reason)
    signer = platform.device_for_res(onenet_auth.parse(header)["res"])
    dev_id = request.query.get("dev_id")
    if signer is not None and dev_id is not None and dev_id != signer.dev_id:
        raise Refusal(Errno.AUTH_FAILED, "key of device %s used for dev_id %s" % (signer.dev_id, dev_id))


# -- parameters -------------------------------------------------------------------------------

def _required(request, name):
    value = request.query.get(name)
    if not value:
        raise Refusal(Errno.BAD_PARAMETER, "%s missing" % name)
    return value


def _numeric(request, name):
    value = _required(request, name)
    if not value.isdigit():
        raise Refusal(Errno.BAD_PARAMETER, "%s is not a number: %r" % (name, value))
    return value


def _device(platform, request):
    dev_id = _numeric(request, "dev_id")
    device = platform.devices.get(dev_id)
    if device is None:
        raise Refusal(Errno.NOT_FOUND, "no device %s" % dev_id)
    return device


def _ota_type(request):
    value = request.query.get("type")
    if value not in ("1", "2"):
        raise Refusal(Errno.BAD_PARAMETER, "type must be 1 or 2, not %r" % value)
    return int(value)


def _check_cdn(request):
    if request.query.get("cdn", "false") not in ("true", "false"):
        raise Refusal(Errno.BAD_PARAMETER, "cdn must be true or false")


def _task_of_token(platform, token, device):
    task = platform.task_by_token(token)
    if task is None or task.device is not device:
        raise Refusal(Errno.NOT_FOUND, "token %s is not a task of device %s" % (token, device.dev_id))
    return task


def _json_object(request, errno):
    try:
        body = json.loads(request.body)
    except ValueError:
        raise Refusal(errno, "body is not JSON: %r" % request.body[:80])
    if not isinstance(body, dict):
        raise Refusal(errno, "body is not a JSON object")
    return body


def _integer_field(body, name):
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Refusal(Errno.BAD_RESULT, "%s must be a non-negative integer, not %r" % (name, value))
    return value


def _refuse_unless_ok(errno, note):
    if errno != Errno.OK:
        raise Refusal(errno, note)


def task_data(platform, task, local_address):
    """The ``data`` of a check or tasking answer, with the advertising faults applied
    (wrong-md5, wrong-size, then task-data overrides)."""
    faults = platform.faults
    md5 = task.md5
    if faults.wrong_md5:
        md5 = hashlib.md5(b"not the package " + md5.encode()).hexdigest()
    data = {
        "target": task.target, "token": task.token, "size": task.size + faults.size_delta,
        "md5": md5, "signal": task.signal, "power": task.power, "retry": task.retry,
        "interval": task.interval, "type": task.package_type,
    }
    if task.ip_port == "auto":
        data["ipPort"] = "%s:%d" % (local_address[0], local_address[1])
    elif task.ip_port:
        data["ipPort"] = task.ip_port
    for name, value in faults.task_data.items():  # the task-data fault: malformed tasks
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


# -- endpoints --------------------------------------------------------------------------------

def report_version(platform, request, token, local_address):
    device = _device(platform, request)
    body = _json_object(request, Errno.BAD_PARAMETER)
    versions = {name: body[name] for name in ("f_version", "s_version") if name in body}
    if not versions:
        raise Refusal(Errno.BAD_PARAMETER, "neither f_version nor s_version in the body")
    for name, version in versions.items():
        if not valid_version(version):
            raise Refusal(Errno.BAD_PARAMETER, "%s must be 1-20 chars of [A-Za-z0-9._-]: %r" % (name, version))
    for name, version in versions.items():
        setattr(device, name, version)
        for task in platform.tasks_of(device):
            if VERSION_FIELD[task.ota_type] == name:
                task.version_reported(version)
    return None


def query_version(platform, request, token, local_address):
    device = _device(platform, request)
    return {"f_version": device.f_version, "s_version": device.s_version}


def check(platform, request, token, local_address):
    device = _device(platform, request)
    manuf, model = _numeric(request, "manuf"), _numeric(request, "model")
    ota_type = _ota_type(request)
    version = _required(request, "version")
    if not valid_version(version):
        raise Refusal(Errno.BAD_PARAMETER, "version must be 1-20 chars of [A-Za-z0-9._-]: %r" % version)
    _check_cdn(request)
    for task in reversed(platform.tasks_of(device, ota_type)):
        if task.offered and (task.manuf, task.model) == (manuf, model):
            return task_data(platform, task, local_address)
    raise Refusal(Errno.NOT_FOUND, "no task for device %s type %d manuf %s model %s"
                  % (device.dev_id, ota_type, manuf, model))


def check_token(platform, request, token, local_address):
    task = _task_of_token(platform, token, _device(platform, request))
    errno = task.check_token()
    _refuse_unless_ok(errno, "token check in state %s" % task.state)
    return None


def progress(platform, request, token, local_address):
    task = _task_of_token(platform, token, _device(platform, request))
    step = _integer_field(_json_object(request, Errno.BAD_RESULT), "step")
    errno = task.report_result(step) if step > 100 else task.report_step(step)
    _refuse_unless_ok(errno, "step %d in state %s" % (step, task.state))
    return None


def report(platform, request, token, local_address):
    device = _device(platform, request)
    task = _task_of_token(platform, _required(request, "token"), device)
    result = _integer_field(_json_object(request, Errno.BAD_RESULT), "result")
    errno = task.report_result(result)
    _refuse_unless_ok(errno, "result %d in state %s" % (result, task.state))
    return None


def tasking(platform, request, token, local_address):
    device = _device(platform, request)
    ota_type = _ota_type(request)
    _check_cdn(request)
    tasks = platform.tasks_of(device, ota_type)
    if tasks:
        newest = tasks[-1]
        newest.refresh()
        if newest.state in OPEN_STATES:
            return task_data(platform, newest, local_address)
        if newest.state == EXPIRED:
            raise Refusal(Errno.TOKEN_EXPIRED, "the token of task %d expired" % newest.id)
    raise Refusal(Errno.NOT_FOUND, "no task in progress for device %s type %d" % (device.dev_id, ota_type))


def dev_info(platform, request, token, local_address):
    pid = _required(request, "pid")
    unique_id = _required(request, "authInfo")
    if pid != platform.product_id:
        raise Refusal(Errno.NOT_FOUND, "pid %s is not this product" % pid)
    for device in platform.devices.values():
        if device.unique_id == unique_id:
            return {"dev_id": int(device.dev_id)}
    raise Refusal(Errno.NOT_FOUND, "no device with authInfo %r" % unique_id)


HANDLERS = {
    "version_report": report_version,
    "version_query": query_version,
    "check": check,
    "token_check": check_token,
    "progress": progress,
    "report": report,
    "tasking": tasking,
    "dev_info": dev_info,
}
