"""Fuzzing the device's parsers with generated server replies (hypothesis).

test_generated_replies: a scripted raw-socket server in this test answers each request with
the generated reply of its case (the case number is in the request path, so the client's own
retries get the same reply) and then closes. One micropython process (-X heapsize=64k, the
firmware as .mpy) runs a batch of cases through the device's code: the OneNET API calls
(onenet_ota.south and .check: status line, headers, framing, JSON envelope, task data) and the download
request (onenet_ota.http: Content-Length / Content-Range / chunked body into a 4 KiB buffer),
printing one line per case. Every case must end in a value or in one of the flow's own
exceptions: no MemoryError, no other exception, no hang.

test_generated_task_data_through_the_cycle: task data of wrong types and sizes served by the
mock platform to a whole device boot (boot.py, main.py, onenet_ota.run()): every boot ends with
a result or a flow error printed by main.py, never anything else, and never a switch.
"""
import collections
import json
import re
import socket
import subprocess
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import micropython

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# what the flow may raise: defined errors, each with an errno or a report code
ALLOWED = {"HTTPError", "Timeout", "ConnectionLost", "ProtocolError", "TLSError", "ServerError",
           "PlatformError", "TaskError", "Fail"}
KINDS = ("check", "tasking", "report", "download")
BATCH = 40
EXAMPLES = 25


STATS = collections.Counter()  # outcome -> cases, shown at the end with -s


@pytest.fixture(scope="module", autouse=True)
def show_stats():
    yield
    print("\nfuzz outcomes:", dict(sorted(STATS.items())))


# ---- the scripted server ------------------------------------------------------------------------

class ScriptedServer:
    """Answers a request on /c<N>/... with replies[N] (bytes), then closes the connection."""

    def __init__(self):
        self.replies = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                got = conn.recv(4096)
                if not got:
                    return
                data += got
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(rest) < length:
                got = conn.recv(4096)
                if not got:
                    break
                rest += got
            path = lines[0].split(" ")[1]
            self.requests += 1
            # the case: the dev_id of an API call, the first path segment of a download
            case = re.search(r"dev_id=c(\d+)", path) or re.match(r"/c(\d+)/", path)
            try:
                reply = self.replies[int(case[1])] if case else None
            except IndexError:
                reply = None
            if reply is None:
                reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            conn.sendall(reply)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(0.5)
            try:
                while conn.recv(4096):  # until the client closes, or a moment
                    pass
            except OSError:
                pass
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def server():
    s = ScriptedServer()
    yield s
    s.close()


DRIVER = r'''
import gc, sys, json
from onenet_ota import check
from onenet_ota.south import South
HOST, PORT = sys.argv[1], int(sys.argv[2])
with open(sys.argv[3]) as f:
    kinds = json.load(f)
buf = bytearray(4096)


class Cfg:  # what the platform object reads of ota_config.json
    host, port, https, timeout, ca_file = HOST, PORT, False, 1, ""
    product_id, access_key, auth_method, auth_lifetime = "123456", "c2VjcmV0a2V5c2VjcmV0a2V5", "sha256", 3600
    manuf, model, cdn = 101, 10101, True
    device_id = ""


for i, kind in enumerate(kinds):
    Cfg.device_id = "c%d" % i  # in every API path: the server answers with case i
    p = South(Cfg)
    try:
        if kind == "check":
            data = p.check(1, "1.0")
            r = "task" if data and check.task(data, "fota") else "none"
        elif kind == "tasking":
            data = p.in_progress(1)
            r = "task" if data and check.task(data, "fota") else "none"
        elif kind == "report":
            p.report({"token": "ota_tok"}, 101)
            r = "reported"
        else:
            resp = p.client.request("GET", "http://%s:%d/c%d/ota/south/download/ota_tok" % (HOST, PORT, i),
                                    headers={"Range": "bytes=0-8191"})
            total = 0
            while True:
                k = resp.readinto(buf)
                if not k:
                    break
                total += k
                if total > 1 << 20:
                    raise RuntimeError("unbounded body")
            r = "%d %d" % (resp.status, total)
        print("case", i, "ok", r)
    except MemoryError:
        print("case", i, "MemoryError")
    except Exception as e:
        print("case", i, "exc", type(e).__name__, getattr(e, "code", getattr(e, "errno", "-")))
    p.close()
    p = None
    gc.collect()
print("done", gc.mem_free())
'''


@pytest.fixture(scope="module")
def driver(tmp_path_factory, compiled):
    path = tmp_path_factory.mktemp("fuzz") / "driver.py"
    path.write_text(DRIVER)
    return path, compiled


# ---- strategies ---------------------------------------------------------------------------------

safe_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=60)
any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def field(valid):
    return st.one_of(valid, valid, any_json, st.text(max_size=300))


TASK_FIELDS = {
    "target": field(st.sampled_from(["1.1", "2.0-rc_1", "a" * 20])),
    "token": field(st.sampled_from(["ota_tok", "ota_" + "x" * 120])),
    "size": field(st.integers(-5, 2**40)),
    "md5": field(st.text("0123456789abcdefABCDEF", min_size=30, max_size=34)),
    "signal": field(st.integers(-200, 200)),
    "power": field(st.integers(-5, 200)),
    "retry": field(st.integers(-3, 10)),
    "interval": field(st.integers(-3, 10)),
    "ipPort": field(st.sampled_from(["127.0.0.1:80", "host:1/../x", "a b", ""])),
    "type": field(st.sampled_from([1, 2, 3])),
}
task_data = st.fixed_dictionaries({}, optional=TASK_FIELDS)
envelope = st.fixed_dictionaries({}, optional={
    "errno": st.one_of(st.just(0), st.sampled_from([1, 2, 4, 7, 12, 17, 20, 21, 22, 24]), any_json),
    "error": st.one_of(st.just("succ"), safe_text, any_json),
    "data": st.one_of(task_data, task_data, any_json),
})


@st.composite
def json_body(draw):
    shape = draw(st.sampled_from(["envelope"] * 6 + ["any", "cut", "huge", "garbage"]))
    if shape == "envelope":
        return json.dumps(draw(envelope)).encode()
    if shape == "any":
        return json.dumps(draw(any_json)).encode()
    text = json.dumps(draw(envelope)).encode()
    if shape == "cut":
        return text[:draw(st.integers(0, len(text)))]
    if shape == "huge":
        return text[:-1] + b', "pad": "' + b"x" * draw(st.integers(900, 3000)) + b'"}'
    return draw(st.binary(max_size=200))


@st.composite
def chunked(draw, body):
    """body in chunked framing, truthful or lying."""
    out = b""
    at = 0
    while at < len(body):
        n = draw(st.integers(1, max(1, len(body) - at)))
        size = n + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 1000]))
        size_text = draw(st.sampled_from(["%x", "%X", "%x;ext=1", "%x ", "0x%x", "%08x"])) % max(size, 0) \
            if draw(st.integers(0, 9)) else draw(st.sampled_from(["", "zz", "-1", "fffffffffff", " " * 600]))
        out += size_text.encode() + b"\r\n" + body[at:at + n] + draw(st.sampled_from([b"\r\n"] * 5 + [b"", b"xx"]))
        at += n
    end = draw(st.sampled_from([b"0\r\n\r\n"] * 4 + [b"0\r\nX-Trailer: 1\r\n\r\n", b"", b"0\r\n",
                                b"0\r\n" + b"T: 1\r\n" * 40 + b"\r\n"]))
    return out + end


STATUS = ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 206 Partial Content", "HTTP/1.0 200 OK",
          "HTTP/1.1 500 Internal Server Error", "HTTP/1.1 503 Busy", "HTTP/1.1 404 Not Found",
          "HTTP/1.1 302 Found", "HTTP/1.1 100 Continue", "HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified"]


@st.composite
def status_line(draw):
    how = draw(st.integers(0, 9))
    if how < 6:
        return draw(st.sampled_from(STATUS))
    if how < 8:
        return "%s %s %s" % (draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1", "ICY", ""])),
                             draw(st.one_of(st.integers(-5, 1000).map(str), safe_text)), draw(safe_text))
    if how < 9:
        return "HTTP/1.1 200 " + "A" * draw(st.integers(400, 2000))
    return draw(st.binary(max_size=40)).replace(b"\n", b"").decode("latin-1")


@st.composite
def extra_header(draw):
    return draw(st.one_of(
        st.tuples(st.sampled_from(["Connection"]), st.sampled_from(["close", "keep-alive", "Close"])),
        st.tuples(st.sampled_from(["Location"]), st.sampled_from(["/c999/x", "http://127.0.0.1:1/x", "x", ""])),
        st.tuples(st.sampled_from(["Date"]), st.sampled_from(["Mon, 01 Jan 2024 00:00:00 GMT", "garbage", ""])),
        st.tuples(st.text("abcXYZ-", min_size=1, max_size=10), safe_text),
        st.tuples(st.sampled_from(["X-Long"]), st.integers(500, 1500).map(lambda n: "v" * n)),
        st.tuples(st.sampled_from([" Content-Length", "Content-Length ", "NoColon"]), safe_text),
        st.tuples(st.sampled_from(["Content-Type"]), st.sampled_from(["application/json", "text/html"])),
    ))


@st.composite
def reply(draw, kind):
    if draw(st.booleans()):
        return draw(sound_reply(kind))
    if kind == "download":
        body = draw(st.binary(max_size=9000)) if draw(st.booleans()) else bytes(draw(st.integers(0, 9000)))
    else:
        body = draw(json_body())
    framing = draw(st.sampled_from(["length", "length", "chunked", "none", "lie", "double"]))
    headers = []
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "lie":
        headers.append(("Content-Length", draw(st.one_of(
            st.integers(-3, 3).map(lambda d: str(len(body) + d)), st.integers(0, 2**40).map(str),
            st.sampled_from(["-1", "abc", "", "1e3", "0x10", " 5", "99999999999"])))))
    elif framing == "double":
        headers += [("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))]
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", draw(st.sampled_from(["chunked"] * 4 + ["gzip", "chunked, gzip", "Chunked"]))))
        if draw(st.integers(0, 4)) == 0:
            headers.append(("Content-Length", str(len(body))))
        body = draw(chunked(body))
    if kind == "download" and draw(st.integers(0, 3)):
        n = len(body)
        headers.append(("Content-Range", draw(st.one_of(
            st.just("bytes 0-%d/%d" % (max(n - 1, 0), max(n, 1) * 2)),
            st.tuples(st.integers(-2, 9000), st.integers(-2, 9000), st.one_of(st.integers(-1, 20000).map(str), st.just("*")))
            .map(lambda t: "bytes %d-%d/%s" % t),
            st.sampled_from(["bytes */100", "items 0-1/2", "bytes 0-1", "bytes=0-1/2", "", "bytes a-b/c"]),
            safe_text))))
    headers += draw(st.lists(extra_header(), max_size=4))
    if draw(st.integers(0, 24)) == 0:
        headers += [("X-Many", "v")] * 40
    headers = draw(st.permutations(headers))
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\r\n", "\n"]))
    head = (draw(status_line()) + eol + "".join("%s: %s%s" % (k, v, eol) for k, v in headers) + eol)
    raw = head.encode("utf-8", "surrogateescape") + body
    if draw(st.integers(0, 11)) == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]  # the connection ends early
    return raw


@st.composite
def sound_reply(draw, kind):
    """Framing as a real server sends it (status, Content-Length or chunked, benign headers):
    the generated content (JSON envelope and task data, or a download range) gets parsed."""
    if kind == "download":
        body = bytes(draw(st.integers(0, 8192)))
        status = draw(st.sampled_from(["HTTP/1.1 206 Partial Content"] * 3 + ["HTTP/1.1 200 OK"]))
        headers = [("Content-Type", "application/octet-stream")]
        if status.split()[1] == "206":
            total = draw(st.sampled_from([len(body), len(body) * 2, 65536, None]))
            headers.append(("Content-Range", "bytes %d-%d/%s" % (0, max(len(body) - 1, 0), total or "*")))
    else:
        body = json.dumps(draw(envelope)).encode()
        status = "HTTP/1.1 200 OK"
        headers = [("Content-Type", "application/json")]
    if draw(st.integers(0, 3)):
        headers.append(("Content-Length", str(len(body))))
    else:
        headers.append(("Transfer-Encoding", "chunked"))
        pieces = [body[i:i + 100] for i in range(0, len(body), 100)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    headers.append(("Date", "Mon, 01 Jan 2024 00:00:00 GMT"))
    head = status + "\r\n" + "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
    return head.encode() + body


cases = st.lists(st.sampled_from(KINDS).flatmap(lambda k: st.tuples(st.just(k), reply(k))),
                 min_size=BATCH, max_size=BATCH)


# ---- the properties -----------------------------------------------------------------------------

@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(batch=cases)
def test_generated_replies(batch, server, driver, tmp_path_factory):
    script, mpy = driver
    kinds_file = tmp_path_factory.mktemp("kinds") / "kinds.json"
    kinds_file.write_text(json.dumps([k for k, _ in batch]))
    server.replies = [r for _, r in batch]
    try:
        proc = micropython.run([str(script), "127.0.0.1", str(server.port), str(kinds_file)],
                               heapsize="64k", path=micropython.micropypath(mpy), timeout=BATCH * 4)
    except subprocess.TimeoutExpired:
        raise AssertionError("the batch hung")
    out = proc.stdout.splitlines()
    assert proc.returncode == 0 and out and out[-1].startswith("done"), proc.stdout + proc.stderr
    results = {}
    for line in out[:-1]:
        parts = line.split()
        assert parts[0] == "case", line
        results[int(parts[1])] = parts[2:]
    assert sorted(results) == list(range(len(batch))), proc.stdout
    for i, (kind, raw) in enumerate(batch):
        got = results[i]
        STATS["%s %s" % (kind, " ".join(got[:2]) if got[0] == "exc" else "ok " + got[1])] += 1
        detail = "case %d (%s): %s\nreply %r" % (i, kind, got, raw[:600])
        assert got[0] in ("ok", "exc"), detail  # "MemoryError" is neither
        if got[0] == "exc":
            assert got[1] in ALLOWED, detail
            if got[1] in ("HTTPError", "Timeout", "ConnectionLost", "ProtocolError"):
                assert got[2] in ("104", "107"), detail  # a download failure's report code
        elif kind == "download":
            status, total = (int(v) for v in got[1:3])
            assert total <= 9000 + 16, detail  # never more than was sent


class Rig(dict):
    def __repr__(self):  # hypothesis prints the arguments of a failing example: not the images
        return "<rig>"


@pytest.fixture(scope="module")
def cycle_rig(tmp_path_factory, compiled):
    from conftest import DEV_ID, OLD_VERSION, UNIQUE_ID
    from tools import firmware
    from sim.esp_image import build_app_image
    from tools.mockplatform import DEFAULT_ACCESS_KEY, DEFAULT_PRODUCT_ID, MockPlatform

    with MockPlatform(product_id=DEFAULT_PRODUCT_ID, access_key=DEFAULT_ACCESS_KEY) as mock:
        mock.add_device(DEV_ID, unique_id=UNIQUE_ID, f_version=OLD_VERSION)
        root = tmp_path_factory.mktemp("cycle")
        yield Rig(platform=mock, root=root, mpy=compiled, old=build_app_image(OLD_VERSION, 32 * 1024),
                  new=build_app_image("1.1", 32 * 1024), dev_id=DEV_ID, firmware=firmware)
        assert not mock.errors, mock.errors


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=task_data)
def test_generated_task_data_through_the_cycle(data, cycle_rig):
    """The mock serves the generated fields (over a sound task) in check and tasking: one
    boot ends with `ota: result ...` or a flow error printed by main.py; a switch happens only
    when the data describes the real package."""
    from sim.device import RESET_EXIT, Device

    rig = cycle_rig
    platform = rig["platform"]
    for task in platform.tasks:
        if task.state in ("to-be-upgraded", "downloading", "upgrading"):
            task.cancel()
    platform.clear_faults()
    task = platform.add_task(rig["dev_id"], rig["new"], "1.1", retry=1, interval=0)
    platform.set_fault("task-data", {k: v for k, v in data.items()})
    n = next(_counter)
    device = Device(rig["root"] / ("d%d" % n), image=rig["old"])
    rig["firmware"].install(device.fs, platform.device_config(rig["dev_id"], timeout=1))
    result = device.boot(extra_path=(rig["mpy"],), timeout=60)
    out = result.output
    detail = "task data %r:\n%s" % (data, out)
    assert result.returncode in (0, RESET_EXIT), detail
    assert "MemoryError" not in out, detail
    from tools.campaign import exceptions_in

    assert all(name in ALLOWED for name in exceptions_in(out)), detail
    assert "ota: result" in out or exceptions_in(out) or result.returncode == RESET_EXIT, detail
    STATS["cycle " + (out.strip().splitlines() or ["?"])[-1][:40]] += 1
    if result.returncode == RESET_EXIT:  # switched: only to the real package, verified
        assert device.slot_image("ota_1") == rig["new"], detail
    assert device.corruptions() == []


_counter = iter(range(10**9))
