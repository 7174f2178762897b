"""Application (SOTA) bundles and the application slot, under the unix micropython on a real
LittleFS: the fake ESP32's "vfs" partition mounted with os.VfsLfs2, as on a board.

The device side runs DRIVER: it mounts the filesystem, then runs the steps of a JSON file
(stage a bundle from the host through sota.Stage as the download would, unpack, swap, start,
confirm, recover, finish, dump the application tree with the SHA-256 of every file). Power cuts
are FAKE_ESP32_CUT=writes=N: the process dies inside the Nth flash program of its run,
LittleFS's own writes included. The cut sweeps go over every program of unpack + swap, of a
rollback, of the rollback at boot and of the clean-up, and check after recover() that the
application is exactly the old one or exactly the new one, with the marker saying which.

Also: `python -m tools package app` (round trip, standard tar/gzip readers, bundles made with
tar + python), the host validator agreeing with the device on every broken bundle, the space
checks, and the import heap of sota_boot and sota as x64 .mpy (measured, printed, budgeted).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zlib

import pytest

from conftest import REPO
from sim import micropython
from sim.device import CUT_EXIT, Device
from tools.package_app import BundleError, build, manifest, validate

BOOT_BUDGET = 5632  # sota_boot as x64 .mpy, for boot.py and the running application (measured 4.0-5.0 KB: qstr pool growth)
SOTA_BUDGET = 10240  # sota on top of it (measured 7.7 KB; 9.6 KB when its names cross a qstr pool doubling)

DRIVER = r'''
import sys, os, json, gc
with open(sys.argv[1]) as f:  # a file: an argv string over 255 bytes kills the unix port
    cfg = json.load(f)
buf = bytearray(4096)
if not cfg.get("heap"):
    from onenet_ota import sota, sota_boot  # before the mount: its names grow the qstr pool in one piece
import esp32, _rig_lfs
_rig_lfs.mount(cfg.get("mkfs"))
if cfg.get("heap"):
    import onenet_ota
    gc.collect()
    a = gc.mem_alloc()
    from onenet_ota import sota_boot
    gc.collect()
    b = gc.mem_alloc()
    from onenet_ota import sota
    gc.collect()
    print("HEAP", b - a, gc.mem_alloc() - b)
from onenet_ota import sota, sota_boot
from onenet_ota.codes import Fail
import hashlib, binascii


def tree(path):
    out = {}
    def walk(p, rel):
        for e in os.ilistdir(p):
            if e[1] == 0x4000:
                walk(p + "/" + e[0], rel + e[0] + "/")
            else:
                h = hashlib.sha256()
                with open(p + "/" + e[0], "rb") as f:
                    while True:
                        n = f.readinto(buf)
                        if not n:
                            break
                        h.update(memoryview(buf)[:n])
                out[rel + e[0]] = binascii.hexlify(h.digest()).decode()
    try:
        walk(path, "")
    except OSError:
        return None
    return out


def stage(path):
    size = _rig_lfs.stage(sota, path, buf)
    # read back as after a reboot
    st = sota.Stage(size)
    h = hashlib.md5()
    for at in range(0, size, 4096):
        st.read(at // 4096, buf)
        h.update(buf if size - at >= 4096 else memoryview(buf)[:size - at])
    st.close()
    assert os.stat(sota.bundle_path())[6] == size, (os.stat(sota.bundle_path()), size)
    print("staged", size, binascii.hexlify(h.digest()).decode())


def pending():
    # the version a swap put (or is putting) in place that has not confirmed yet, or None
    m = sota_boot.marker()
    return m.get("v") if m and m["s"] in (sota_boot.SWAP, sota_boot.PENDING, sota_boot.TRIAL) else None


def step(op, *a):
    if op == "stage":
        stage(a[0])
    elif op == "unpack":
        try:
            print("unpack ok", sota.unpack(buf, *a))
        except Fail as e:
            print("unpack err", e.code, e)
    elif op == "swap":
        print("swap", sota.swap())
    elif op == "install":  # the whole way, first start and clean-up included
        stage(a[0])
        print("install", sota.unpack(buf), sota.swap())
        sota_boot.start()
        assert sota_boot.state() == sota_boot.OK, sota_boot.state()
        sota.finish()
    elif op == "start":
        sota_boot.start()
    elif op == "recover":
        print("recover", sota_boot.recover())
    elif op == "complete":  # after a cut: what the flow would do next
        if sota_boot.state() is None:
            step("unpack", *a)
            print("swap", sota.swap())
    elif op == "put":
        i = a[0].rfind("/")
        if i > 0:
            try:
                os.mkdir(a[0][:i])
            except OSError:
                pass
        with open(a[0], "w") as f:
            f.write(a[1])
    elif op == "mem":
        gc.collect()
        print("mem", gc.mem_free())
    elif op == "space":
        print("space", sota.space_ok(a[0]))
    elif op == "free":
        print("free", sota.free()[1])
    elif op == "writes":
        # the fake's countdown of flash programs (-1 - programs so far): _writes, or w once compacted
        print("writes", -1 - getattr(esp32, "_writes", getattr(esp32, "w", 0)))
    elif op == "dump":
        print("DUMP " + json.dumps({"state": sota_boot.state(), "pending": pending(),
                                    "version": sota_boot.version(), "app": tree("app"),
                                    "top": sorted(os.listdir())}))
    else:
        getattr(sys.modules["onenet_ota." + ("sota" if op in ("finish", "discard") else "sota_boot")], op)()
        print(op, "done")


for s in cfg["steps"]:
    step(*s)
print("END")
'''


class Rig:
    """A fake ESP32 whose vfs partition holds a LittleFS, driven by DRIVER."""

    def __init__(self, root, path=()):
        self.root = root
        self.device = Device(root / "device")
        self.driver = root / "driver.py"
        self.driver.write_text(DRIVER)
        self.args = [str(self.driver)]
        if path:  # everything as .mpy, the driver too (-m: a .mpy is not a script)
            from tools.firmware import compile_module

            compile_module(self.driver, root)
            self.args = ["-m", "driver"]
            path = (root,) + tuple(path)
        self.path = micropython.micropypath(*path)
        self.n = 0

    def file(self, name, data):
        p = self.root / name
        p.write_bytes(data)
        return str(p)

    def run(self, *steps, cut=None, mkfs=False, heapsize=None, heap=False, check=True):
        self.n += 1
        cfg = self.root / ("cfg%d.json" % self.n)
        cfg.write_text(json.dumps({"steps": steps, "mkfs": mkfs, "heap": heap}))
        env = {"FAKE_ESP32_DIR": str(self.device.root), "FAKE_ESP32_CUT": cut or ""}
        r = micropython.run(self.args + [str(cfg)], env=env, path=self.path, cwd=str(self.device.fs),
                            heapsize=heapsize, timeout=60)
        out = r.stdout + r.stderr
        if cut:
            return r.returncode, out
        if check:
            assert r.returncode == 0 and out.rstrip().endswith("END"), out
        return out

    def dump(self, *before):
        out = self.run(*before, ("dump",))
        return json.loads(out.split("DUMP ", 1)[1].split("\n", 1)[0])

    def snapshot(self):
        return (self.device.root / "flash.bin").read_bytes()

    def restore(self, flash):
        (self.device.root / "flash.bin").write_bytes(flash)


V1 = {"main.py": b"import helper\nprint('app 1.0 running', helper.X)\n", "helper.py": b"X = 1\n" * 300,
      "lib/util.py": b"U = 1\n"}
V2 = {"main.py": b"import lib.util\nprint('app 2.0 running', lib.util.U)\n", "lib/util.py": b"U = 2\n" * 900,
      "lib/more.bin": bytes(range(256)) * 24, "data/readme.txt": b"two\n"}
V2_RAISES = {"main.py": b"print('app 2.0 starting')\nraise RuntimeError('2.0 is broken')\n"}
V2_RESETS = {"main.py": b"print('app 2.0 starting')\nimport machine\nmachine.reset()\n"}
V2_CONFIRMS = {"main.py": b"import onenet_ota.sota_boot as s\ns.confirm()\nprint('app 2.0 confirmed')\n"
               b"raise RuntimeError('after confirm')\n"}


def expected(files, version):
    out = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    out["manifest.json"] = hashlib.sha256(manifest(files, version)).hexdigest()
    return out


TREE1, TREE2 = expected(V1, "1.0"), expected(V2, "2.0")


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    r.run(("install", r.file("v1.tar", build(V1, "1.0"))), mkfs=True)
    assert r.device.corruptions() == []
    return r


# ---- packaging


def package(*args):
    return subprocess.run([sys.executable, "-m", "tools", "package", "app", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def write_tree(root, files):
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_package_round_trip_on_the_device(tmp_path, rig):
    src = tmp_path / "src"
    write_tree(src, V2)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (src / ".hidden").write_bytes(b"junk")
    results = {}
    for how in ([], ["--compress"], ["--compress", "zlib"], ["--mpy", "--compress"]):
        out = tmp_path / ("b%d" % len(results))
        r = package(str(src), "--version", "2.0", "-o", str(out), *how)
        assert r.returncode == 0, r.stderr
        data = out.read_bytes()
        assert "size  %d\n" % len(data) in r.stdout and "md5   %s\n" % hashlib.md5(data).hexdigest() in r.stdout
        results[" ".join(how)] = data
        check = package(str(out), "--json")
        assert check.returncode == 0 and json.loads(check.stdout)["md5"] == hashlib.md5(data).hexdigest()
    # standard readers open them; the manifest comes first; junk was left out
    with tarfile.open(fileobj=io.BytesIO(results["--compress"])) as t:
        names = t.getnames()
    assert names[0] == "manifest.json" and sorted(names[1:]) == sorted(V2)
    assert results["--compress"][:2] == b"\x1f\x8b" and gzip.decompress(results["--compress"])[:13] == b"manifest.json"
    assert zlib.decompress(results["--compress zlib"])[:13] == b"manifest.json"
    assert results["--compress zlib"][0] >> 4 == 4  # CINFO 4: a 4 KiB window
    mpy = validate(results["--mpy --compress"])
    assert sorted(mpy["files"]) == sorted(n[:-3] + ".mpy" if n.endswith(".py") else n for n in V2)
    # the device installs each one, byte for byte
    for how, data in results.items():
        d = rig.dump(("stage", rig.file("b.bin", data)), ("unpack", "2.0"), ("swap",), ("start",), ("finish",))
        assert d["version"] == "2.0" and d["state"] is None
        if "mpy" not in how:
            assert d["app"] == TREE2, how
        else:
            assert sorted(d["app"]) == sorted(["manifest.json"] + list(mpy["files"]))
        rig.run(("install", rig.file("v1.tar", build(V1, "1.0"))))
    out = rig.run(("stage", rig.file("b.bin", results["--mpy --compress"])), ("unpack", "2.0"), ("swap",), ("start",))
    assert "app 2.0 running" in out


def test_package_refusals(tmp_path):
    src = tmp_path / "src"
    write_tree(src, {"app.py": b"x = 1\n"})
    r = package(str(src), "--version", "2.0", "-o", str(tmp_path / "b"))
    assert r.returncode == 1 and "entry module 'main'" in r.stderr and "206" in r.stderr
    r = package(str(src), "--version", "2.0", "--entry", "app", "-o", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert package(str(src), "--version", "bad version!", "-o", str(tmp_path / "b")).returncode == 2
    assert package(str(src), "--version", "2.0").returncode == 2  # no -o
    r = package(str(tmp_path / "b"), "--version", "3.0")
    assert r.returncode == 1 and "204" in r.stderr
    big = tmp_path / "big.tgz"
    big.write_bytes(gzip.compress(build(dict(V2, **{"lib/more.py": os.urandom(6000) * 2}), "2.0")))
    r = package(str(big))
    assert r.returncode == 1 and "window" in r.stderr


def test_bundles_made_with_standard_tools(tmp_path, rig):
    tar = shutil.which("tar")
    if not tar:
        pytest.skip("no tar command")
    src = tmp_path / "src"
    write_tree(src, V2)
    (src / "manifest.json").write_bytes(manifest(V2, "2.0"))
    names = ["manifest.json"] + sorted(V2)
    bundles = {}
    for fmt in ("ustar", "gnu"):
        out = tmp_path / ("%s.tar" % fmt)
        subprocess.run([tar, "--format=" + fmt, "-cf", str(out), "-C", str(src)] + names, check=True)
        bundles[fmt] = out.read_bytes()
    # "./" first, directories included, as `tar -C src .` makes it (manifest named first)
    out = tmp_path / "dirs.tar"
    subprocess.run([tar, "--format=ustar", "-cf", str(out), "-C", str(src), "./manifest.json", "./lib", "./data",
                    "./main.py"], check=True)
    bundles["dirs"] = out.read_bytes()
    bundles["gzip12"] = compress_with(bundles["ustar"], 16 + 12)
    for name, data in bundles.items():
        assert validate(data, "2.0")["version"] == "2.0", name
        d = rig.dump(("stage", rig.file("b.bin", data)), ("unpack", "2.0"), ("swap",), ("start",), ("finish",))
        assert d["app"] == TREE2 and d["version"] == "2.0", name
        rig.run(("install", rig.file("v1.tar", build(V1, "1.0"))))


def compress_with(data, wbits):
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


# ---- broken and malicious bundles


def raw_tar(entries, fmt=tarfile.USTAR_FORMAT):
    """(TarInfo or name, data) in order, as given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for info, data in entries:
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def with_manifest(files, entries, version="2.0", **kw):
    return raw_tar([("manifest.json", manifest(files, version))] + entries, **kw)


def special(name, kind, **kw):
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info, None


GOOD = {"main.py": b"print('evil 2.0')\n"}
FAR = os.urandom(5000)
BIG = {"main.py": b"print(1)\n", "lib/far.bin": FAR + os.urandom(3000) + FAR}


def broken_bundles():
    good = build(GOOD, "2.0")
    evil = b"print('pwned')\n"
    return {
        "traversal": (206, "outside", with_manifest(dict(GOOD, **{"../evil.py": evil}),
                                                    [("main.py", GOOD["main.py"]), ("../evil.py", evil)])),
        "nested traversal": (206, "outside", with_manifest(dict(GOOD, **{"lib/../../evil.py": evil}),
                                                           [("main.py", GOOD["main.py"]), ("lib/../../evil.py", evil)])),
        "absolute": (206, "absolute", with_manifest(dict(GOOD, **{"/evil.py": evil}),
                                                    [("main.py", GOOD["main.py"]), ("/evil.py", evil)])),
        "symlink": (206, "type '2'", with_manifest(GOOD, [("main.py", GOOD["main.py"]),
                                                          special("lib", tarfile.SYMTYPE, linkname="/")])),
        "hard link": (206, "type '1'", with_manifest(GOOD, [("main.py", GOOD["main.py"]),
                                                            special("x.py", tarfile.LNKTYPE, linkname="main.py")])),
        "device": (206, "type '3'", with_manifest(GOOD, [("main.py", GOOD["main.py"]),
                                                         special("tty", tarfile.CHRTYPE, devmajor=4, devminor=1)])),
        "fifo": (206, "type '6'", with_manifest(GOOD, [("main.py", GOOD["main.py"]), special("p", tarfile.FIFOTYPE)])),
        "pax header": (206, "type 'x'", with_manifest(GOOD, [("main.py", GOOD["main.py"]), ("é.py", b"1")],
                                                      fmt=tarfile.PAX_FORMAT)),
        "not in the manifest": (206, "not in the manifest", with_manifest(GOOD, [("main.py", GOOD["main.py"]),
                                                                                 ("extra.py", evil)])),
        "twice": (206, "not in the manifest", with_manifest(GOOD, [("main.py", GOOD["main.py"]),
                                                                   ("main.py", GOOD["main.py"])])),
        "missing": (206, "missing", with_manifest(dict(GOOD, **{"gone.py": evil}),
                                                            [("main.py", GOOD["main.py"])])),
        "wrong hash": (205, "SHA-256", with_manifest(GOOD, [("main.py", b"print('evil 2.1')\n")])),
        "oversize entry": (206, "bytes, manifest", with_manifest(GOOD, [("main.py", GOOD["main.py"] + b"#" * 5000)])),
        "no manifest first": (206, "first entry", raw_tar([("main.py", GOOD["main.py"]),
                                                           ("manifest.json", manifest(GOOD, "2.0"))])),
        "no entry module": (206, "manifest", with_manifest({"app.py": b"1"}, [("app.py", b"1")])),
        "bad manifest": (206, "manifest", raw_tar([("manifest.json", b"[1, 2]"), ("main.py", b"1")])),
        "wrong version": (204, "target", build(GOOD, "2.1")),
        "truncated": (206, "truncated", good[:1024 + 100]),
        "truncated before the end": (206, "truncated", good[:1536]),
        "truncated gzip": (206, "truncated", compress_with(build(BIG, "2.0"), 16 + 12)[:700]),
        "zlib window too large": (206, "zlib window 32768", compress_with(build(BIG, "2.0"), 15)),
        "gzip window too large": (206, "window", compress_with(build(BIG, "2.0"), 16 + 15)),
        "not a tar": (206, "not a tar", b"PK\x03\x04" + bytes(range(256)) * 8),
        "header checksum": (206, "checksum", good[:1] + b"M" + good[2:]),
    }


def test_broken_and_malicious_bundles_are_refused(rig):
    bundles = broken_bundles()
    steps = []
    for name, (_, _, data) in bundles.items():
        steps += [("stage", rig.file(name.replace(" ", "_") + ".bin", data)), ("unpack", "2.0")]
    out = rig.run(*steps, ("dump",))
    results = [line for line in out.splitlines() if line.startswith("unpack ")]
    assert len(results) == len(bundles), out
    for (name, (code, words, data)), line in zip(bundles.items(), results):
        assert line.startswith("unpack err %d " % code), (name, line)
        assert words in line, (name, line)
        with pytest.raises(BundleError) as e:  # the host check agrees with the device
            validate(data, "2.0")
        assert e.value.code == code, (name, e.value)
    d = json.loads(out.split("DUMP ", 1)[1].split("\n", 1)[0])
    assert d["app"] == TREE1 and d["version"] == "1.0" and d["state"] is None
    assert not {"app.tmp", "app.new"} & set(d["top"]), d["top"]  # nothing left behind
    assert not any(n.startswith("evil") for n in d["top"])
    assert "app 1.0 running" in rig.run(("start",))
    assert rig.device.corruptions() == []


# ---- start, confirm, rollback


def test_upgrade_confirm_and_clean_up(rig):
    d = rig.dump(("stage", rig.file("v2.tar", build(V2, "2.0"))), ("unpack", "2.0"), ("swap",))
    assert d["app"] == TREE2 and d["state"] == "pending" and d["pending"] == "2.0"
    assert {"app.old", "sota.json"} <= set(d["top"]) and "app.bundle" not in d["top"]
    assert "recover pending" in rig.run(("recover",))  # a reset before the start changes nothing
    out = rig.run(("start",))
    assert "app 2.0 running 2" in out and "confirmed 2.0" in out
    d = rig.dump(("recover",))
    assert d["state"] == "ok" and d["pending"] is None and d["version"] == "2.0"
    d = rig.dump(("finish",))
    assert d["state"] is None and d["app"] == TREE2
    assert not {"app.old", "app.bad", "app.new", "app.tmp", "app.bundle", "sota.json"} & set(d["top"])


def test_new_app_raising_at_import_is_rolled_back(rig):
    out = rig.run(("stage", rig.file("v2.tar", build(V2_RAISES, "2.0"))), ("unpack", "2.0"), ("swap",), ("start",))
    assert "2.0 is broken" in out and "rollback" in out and "app 1.0 running" in out
    d = rig.dump()
    assert d["state"] == "failed" and d["app"] == TREE1 and d["version"] == "1.0" and "app.bad" in d["top"]
    d = rig.dump(("finish",))
    assert d["state"] is None and "app.bad" not in d["top"] and d["app"] == TREE1


def test_new_app_not_confirmed_before_a_reset_is_rolled_back(rig):
    out = rig.run(("stage", rig.file("v2.tar", build(V2_RESETS, "2.0"))), ("unpack", "2.0"), ("swap",), ("start",),
                  check=False)
    assert "app 2.0 starting" in out and "END" not in out
    d = rig.dump()
    assert d["state"] == "trial"
    d = rig.dump(("recover",))
    assert d["state"] == "failed" and d["app"] == TREE1
    assert "app 1.0 running" in rig.run(("start",))


def test_confirmed_app_that_raises_later_is_kept(rig):
    out = rig.run(("stage", rig.file("v2.tar", build(V2_CONFIRMS, "2.0"))), ("unpack", "2.0"), ("swap",), ("start",),
                  check=False)
    assert "app 2.0 confirmed" in out and "after confirm" in out and "rollback" not in out
    assert rig.dump(("recover",))["state"] == "ok"


def test_first_install_and_rollback_without_a_previous_app(tmp_path):
    r = Rig(tmp_path)
    out = r.run(("stage", r.file("v2.tar", build(V2_RAISES, "2.0"))), ("unpack",), ("swap",), ("start",), mkfs=True)
    assert "rollback" in out
    d = r.dump(("finish",))
    assert d["app"] is None and d["state"] is None and d["version"] is None
    assert "install 2.0 2.0" in r.run(("install", r.file("v2b.tar", build(V2, "2.0"))))
    assert r.dump()["app"] == TREE2


def test_recover_never_raises(rig):
    flash = rig.snapshot()
    cases = [
        [("put", "sota.json", "{not json")],
        [("put", "sota.json", "[]")],
        [("put", "sota.json", '{"s": "weird"}')],
        [("put", "sota.json", '{"s": "swap", "v": "2.0"}')],  # nothing to rename
        [("put", "sota.json", '{"s": "trial", "o": true}')],  # no app.old to go back to
        # a rename that fails: app.old is in the way
        [("put", "app.new/manifest.json", "{}"), ("put", "app.old/x", "x"),
         ("put", "sota.json", '{"s": "swap", "v": "2.0", "o": true}')],
    ]
    for steps in cases:
        rig.restore(flash)
        out = rig.run(*steps, ("recover",), ("dump",), ("start",))
        assert "Traceback" not in out and "app 1.0 running" in out, (steps, out)
        d = json.loads(out.split("DUMP ", 1)[1].split("\n", 1)[0])
        assert d["app"] == TREE1, (steps, d)
    assert "sota: recover: OSError" in out


# ---- space


def test_space_checks(rig):
    free = int(rig.run(("free",)).split("free ")[1].split()[0])
    out = rig.run(("space", free), ("space", free // 4), ("space", 4096))
    assert "space False" in out and out.count("space True") == 2
    zeros = {"main.py": b"print(1)\n", "big.bin": bytes(free + 4096)}
    bundle = compress_with(build(zeros, "2.0"), 16 + 12)  # small to download, too large unpacked
    assert len(bundle) < free // 4
    d = rig.dump(("stage", rig.file("zeros.tgz", bundle)), ("unpack", "2.0"))
    assert d["app"] == TREE1 and "app.tmp" not in d["top"]
    out = rig.run(("unpack", "2.0"))
    assert "unpack err 102" in out and "needs" in out


# ---- power cuts


def sweep(rig, before, action, check, partial=False):
    """Cut the power inside every flash program of `action` (run after `before` is in flash),
    then recover() and check what is there."""
    rig.run(*before)
    flash = rig.snapshot()
    total = int(rig.run(*action, ("writes",)).split("writes ")[1].split()[0])
    assert total > 0
    seen = set()
    for n in range(1, total + 1):
        for cut in ["writes=%d" % n] + (["writes=%d:%d" % (n, 13)] if partial else []):
            rig.restore(flash)
            rc, out = rig.run(*action, cut=cut)
            assert rc == CUT_EXIT, (cut, out)
            out = rig.run(("recover",), ("dump",))
            d = json.loads(out.split("DUMP ", 1)[1].split("\n", 1)[0])
            seen.add(check(d, cut, out))
    rig.restore(flash)
    assert rig.device.corruptions() == []
    return total, seen


def test_power_cut_at_every_write_of_unpack_and_swap(rig):
    bundle = rig.file("v2.tgz", compress_with(build(V2, "2.0"), 16 + 12))

    def check(d, cut, out):
        if d["app"] == TREE1:
            assert d["state"] is None and d["version"] == "1.0", (cut, d)
            # the flow starts over from the staged bundle: unpack, swap
            d2 = json.loads(rig.run(("complete", "2.0"), ("dump",)).split("DUMP ", 1)[1].split("\n", 1)[0])
            assert d2["app"] == TREE2 and d2["state"] == "pending", (cut, d2)
            return "old"
        assert d["app"] == TREE2, (cut, d)  # never a mix
        assert d["state"] == "pending" and d["version"] == "2.0" and "app.old" in d["top"], (cut, d)
        return "new"

    total, seen = sweep(rig, [("stage", bundle)], [("unpack", "2.0"), ("swap",)], check, partial=True)
    print("unpack + swap: %d flash programs, each cut" % total)
    assert seen == {"old", "new"}


def test_power_cut_at_every_write_of_a_rollback(rig):
    bundle = rig.file("v2.tar", build(dict(V2, **V2_RAISES), "2.0"))
    tree2 = expected(dict(V2, **V2_RAISES), "2.0")

    def check(d, cut, out):
        if d["app"] == tree2:  # cut before the trial began: the next start tries again
            assert d["state"] == "pending", (cut, d)
            return "new"
        assert d["app"] == TREE1 and d["state"] == "failed" and d["version"] == "1.0", (cut, d)
        return "old"

    total, seen = sweep(rig, [("stage", bundle), ("unpack", "2.0"), ("swap",)], [("start",)], check, partial=True)
    print("start + rollback: %d flash programs, each cut" % total)
    assert seen == {"old", "new"}


def test_power_cut_at_every_write_of_the_rollback_at_boot(rig):
    bundle = rig.file("v2.tar", build(dict(V2, **V2_RESETS), "2.0"))

    def check(d, cut, out):
        assert d["app"] == TREE1 and d["state"] == "failed", (cut, d)
        return "old"

    before = [("stage", bundle), ("unpack", "2.0"), ("swap",)]
    rig.run(*before)
    rig.run(("start",), check=False)  # machine.reset() before confirming: trial
    total, seen = sweep(rig, [], [("recover",)], check)
    print("rollback at boot: %d flash programs, each cut" % total)


def test_power_cut_at_every_write_of_the_clean_up(rig):
    bundle = rig.file("v2.tar", build(V2, "2.0"))

    def check(d, cut, out):
        assert d["app"] == TREE2 and d["version"] == "2.0" and d["state"] in ("ok", None), (cut, d)
        d2 = rig.dump(("finish",))
        assert d2["state"] is None and "app.old" not in d2["top"], (cut, d2)
        return d["state"]

    total, seen = sweep(rig, [("stage", bundle), ("unpack", "2.0"), ("swap",), ("start",)], [("finish",)], check)
    print("clean-up: %d flash programs, each cut" % total)
    assert seen <= {"ok", None}


# ---- memory


def test_import_heap_and_a_48k_run(tmp_path, compiled):
    r = Rig(tmp_path, path=(compiled,))
    out = r.run(("stage", r.file("v1.tar", build(V1, "1.0"))), mkfs=True, heap=True, heapsize="48k")
    boot, sota = (int(v) for v in out.split("HEAP ", 1)[1].split()[:2])
    print("import heap (x64 .mpy): sota_boot %d B, sota %d B" % (boot, sota))
    assert boot <= BOOT_BUDGET and sota <= SOTA_BUDGET
    # a compressed bundle unpacked, swapped and started in 48 KiB, fake esp32 and LittleFS included
    small1 = {"main.py": b"print('app 1.0 running')\n"}
    small2 = {"main.py": b"print('app 2.0 running')\n", "data.bin": bytes(range(256)) * 256 + os.urandom(8192)}
    data = compress_with(build(small2, "2.0"), 16 + 12)
    r.run(("install", r.file("v1.tar", build(small1, "1.0"))))
    out = r.run(("stage", r.file("v2.tgz", data)), ("mem",), ("unpack", "2.0"), ("mem",), ("swap",), ("start",),
                heapsize="48k")
    assert "app 2.0 running" in out
    print("48k heap, free before/after the unpack:", " ".join(re.findall(r"mem (\d+)", out)))
