"""Delta packages: firmware/onenet_ota/delta.py applies detools sequential patches (none,
heatshrink 8/7, none inside zlib wbits <= 12, optionally behind esp_delta_ota's header) under
the unix micropython, byte for byte; refuses every other format before it makes a byte; ends a
corrupt or truncated patch in codes.Fail; allocates nothing while it runs. And `python -m tools
package delta` makes those packages.

The device side runs a small driver (DRIVER below): the patch comes from a file through a
read_into(buf, n) that hashes it with MD5 as the download does, optionally in short reads;
the base is a file-backed partition (readblocks(block, buf, offset)) or, with "dev", the fake
ESP32's running partition, and the new image goes into fota.Slot.

Budget: importing delta (with its viper helper) as x64 .mpy, after the onenet_ota package,
costs at most IMPORT_BUDGET bytes of heap (measured 6.3 KB); applying a patch adds 1.5 KiB of
buffers (+256 B heatshrink window, or +4 KiB inflate window and the DeflateIO for zlib) to the
caller's 4 KiB sector, and the whole run fits -X heapsize=48k.
"""
import hashlib
import io
import json
import random
import subprocess
import sys
import zlib

import pytest

from conftest import REPO
from sim import micropython
from sim.device import Device
from sim.esp_image import build_app_image
from tools.package_delta import ESP_HEADER_LEN, esp_header, make_patch

IMPORT_BUDGET = 7 * 1024
PART_SIZE = 0x180000
COMPRESSIONS = ("none", "heatshrink", "zlib")

DRIVER = r'''
import sys, gc, json, hashlib, binascii, time
with open(sys.argv[1]) as f:  # a file: an argv string over 255 bytes kills the unix port
    cfg = json.load(f)
if cfg.get("py"):
    sys.modules["onenet_ota._deltav"] = sys  # no add/copy/unshrink there: delta.py falls back
SECTOR = 4096
buf = bytearray(SECTOR)
import onenet_ota  # the package's own import is not delta's, nor the floor's every cycle has
from onenet_ota.codes import Fail
if cfg.get("dev"):
    from onenet_ota import fota
    from onenet_ota.image import verify
gc.collect()
before = gc.mem_alloc()
from onenet_ota import delta
gc.collect()
print("import", gc.mem_alloc() - before)
print("native", int(sys.modules.get("onenet_ota._deltav") not in (None, sys)))
mv = None
gc.collect()
x = gc.mem_alloc()
mv = memoryview(buf)[:1]
tail_cost = gc.mem_alloc() - x  # what the one short read at the end allocates below
mv = None


class File:  # a partition over a file
    def __init__(self, path):
        self.f = open(path, "rb")
        self.f.seek(0, 2)
        self.size = self.f.tell()

    def readblocks(self, n, b, off=0):
        at = n * SECTOR + off
        if at < 0 or at + len(b) > self.size:
            raise OSError(22)
        self.f.seek(at)
        self.f.readinto(b)


def apply(patch_path):
    src = open(patch_path, "rb")
    md5 = hashlib.md5()
    chunk = cfg.get("chunk", 0)

    def read_into(b, n):
        k = src.readinto(b, min(n, chunk) if chunk else n)
        if k:
            md5.update(b if k == len(b) else memoryview(b)[:k])
        return k

    if cfg.get("dev"):
        base = fota.running_partition()
        base_size = base.info()[3]
        slot = fota.Slot()
        slot_size = slot.size
    else:
        base = File(cfg["base"])
        base_size = base.size
        slot = None
        slot_size = cfg.get("slot_size", 0x180000)
    out = None
    image = hashlib.md5()
    t = time.ticks_ms()
    try:
        p = delta.Patch(read_into, base, base_size, slot_size)
        sector = 0
        n = p.fill(buf)
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        while n:
            if slot:
                slot.write(sector, buf)
            else:
                if out is None and cfg.get("out"):
                    out = open(cfg["out"], "wb")
                if out:
                    out.write(buf, n)
                image.update(buf if n == SECTOR else memoryview(buf)[:n])
            sector += 1
            n = p.fill(buf)
        b = gc.mem_alloc()
        gc.enable()
    except Fail as e:
        gc.enable()
        src.close()
        return "error %d %s" % (e.code, e)
    src.close()
    if out:
        out.close()
    if slot:
        verify(slot.partition, p.size, 0, cfg["version"], buf)
    print("growth", b - a - tail_cost)
    print("ms", time.ticks_diff(time.ticks_ms(), t), "size", p.size)
    return "ok %d %s %s" % (p.size, binascii.hexlify(image.digest()).decode(),
                            binascii.hexlify(md5.digest()).decode())


for i, path in enumerate(cfg["patches"]):
    print("result", i, apply(path))
'''


# ---- image pairs
def _edits(rng, old):
    new = bytearray(old)
    for _ in range(300):
        new[rng.randrange(len(new))] = rng.randrange(256)
    for _ in range(10):
        at = rng.randrange(len(new) - 200)
        new[at:at + 100] = rng.randbytes(100)
    return bytes(new)


def _insertions(rng, old):
    new = bytearray(old)
    for _ in range(20):
        at = rng.randrange(len(new))
        new[at:at] = rng.randbytes(rng.randrange(1, 2000))
    return bytes(new)


def _deletions(rng, old):
    new = bytearray(old)
    for _ in range(20):
        at = rng.randrange(len(new) - 3000)
        del new[at:at + rng.randrange(1, 3000)]
    return bytes(new)


def _pair(kind):
    if kind == "esp":
        return build_app_image("1.0", 256 * 1024, seed=5), build_app_image("1.1", 256 * 1024, seed=5)
    rng = random.Random(kind)
    old = rng.randbytes(200 * 1024)
    return old, {"edits": _edits, "insertions": _insertions, "deletions": _deletions}[kind](rng, old)


PAIRS = {kind: _pair(kind) for kind in ("edits", "insertions", "deletions", "esp")}


def _detools(old, new, **kw):
    import detools

    out = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), out, **kw)
    return out.getvalue()


# ---- running the driver
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("delta")
    (root / "driver.py").write_text(DRIVER)
    return root


def _base_file(work, old):
    path = work / ("base-%s.bin" % hashlib.md5(old).hexdigest()[:8])
    if not path.exists():
        path.write_bytes(old + b"\xff" * (PART_SIZE - len(old)))
    return path


def run(work, old, patches, *, path=None, heapsize=None, timeout=60, **cfg):
    """Apply each patch to old on the device; returns (results, other output lines)."""
    files = []
    for i, data in enumerate(patches):
        p = work / ("patch-%d.bin" % i)
        p.write_bytes(data)
        files.append(str(p))
    cfg.update(patches=files, base=str(_base_file(work, old)))
    (work / "cfg.json").write_text(json.dumps(cfg))
    proc = micropython.run([str(work / "driver.py"), str(work / "cfg.json")], heapsize=heapsize,
                           path=path, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    results = [line.split(" ", 2)[2] for line in lines if line.startswith("result ")]
    assert len(results) == len(patches), proc.stdout
    info = {}
    for line in lines:
        if not line.startswith("result "):
            key, _, value = line.partition(" ")
            info.setdefault(key, []).append(value)
    return results, info


def ok(new, package):
    return "ok %d %s %s" % (len(new), hashlib.md5(new).hexdigest(), hashlib.md5(package).hexdigest())


# ---- byte-exact results
@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_pairs_byte_exact_in_every_format(work, kind):
    old, new = PAIRS[kind]
    header = kind == "esp"  # the esp header needs an app image as the base
    packages = [make_patch(old, new, c, header) for c in COMPRESSIONS]
    # whole reads for one, short odd ones for the others: the buffers refill mid-token
    for chunk in (0, 61):
        results, info = run(work, old, packages, chunk=chunk)
        assert results == [ok(new, p) for p in packages]
        assert info["native"] == ["1"]


def test_package_written_to_a_file_is_the_new_image(work):
    old, new = PAIRS["insertions"]
    out = work / "new.bin"
    results, _ = run(work, old, [make_patch(old, new, "heatshrink")], out=str(out), chunk=7)
    assert results[0].startswith("ok ") and out.read_bytes() == new


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_pure_python_fallback_gives_the_same_bytes(work, compression):
    old, new = PAIRS["edits"]
    package = make_patch(old, new, compression)
    fast, fast_info = run(work, old, [package], chunk=100)
    slow, slow_info = run(work, old, [package], chunk=100, py=True)
    assert fast_info["native"] == ["1"] and slow_info["native"] == ["0"]
    assert fast == slow == [ok(new, package)]


# ---- the esp_delta_ota header on the fake ESP32: base in ota_0 (running), new into ota_1
def test_esp_header_on_the_device_then_checked_as_an_image(tmp_path, work, compiled):
    old, new = PAIRS["esp"]
    device = Device(tmp_path / "dev", image=old)
    patch = work / "dev.patch"
    patch.write_bytes(make_patch(old, new, "zlib", header=True))
    (tmp_path / "cfg.json").write_text(json.dumps({"patches": [str(patch)], "dev": True, "version": "1.1"}))
    result = device.boot([str(work / "driver.py"), str(tmp_path / "cfg.json")], extra_path=[compiled])
    assert result.returncode == 0 and "result 0 ok %d " % len(new) in result.output, result.output
    assert device.slot_image("ota_1") == new
    assert device.slot_image("ota_0") == old
    assert device.running_slot() == "ota_0" and device.corruptions() == []


def test_esp_header_for_another_base_is_204_and_writes_nothing(tmp_path, work, compiled):
    old, new = PAIRS["esp"]
    other = build_app_image("0.9", 256 * 1024, seed=5)
    device = Device(tmp_path / "dev", image=old)
    patch = work / "wrong-base.patch"
    patch.write_bytes(make_patch(other, new, "zlib", header=True))
    (tmp_path / "cfg.json").write_text(json.dumps({"patches": [str(patch)], "dev": True, "version": "1.1"}))
    result = device.boot([str(work / "driver.py"), str(tmp_path / "cfg.json")], extra_path=[compiled])
    assert "result 0 error 204 patch for another base image" in result.output, result.output
    _, _, _, addr, size = next(p for p in device.partitions() if p[0] == "ota_1")
    assert not [s for s in device.erase_counts() if addr <= s * 4096 < addr + size]
    assert device.partition("ota_1") == b"\xff" * len(device.partition("ota_1"))


def test_esp_header_in_file_mode(work):
    old, new = PAIRS["esp"]
    other = build_app_image("0.9", 256 * 1024, seed=5)
    good = make_patch(old, new, "heatshrink", header=True)
    wrong = make_patch(other, new, "none", header=True)
    short = esp_header(old)[:40]
    results, _ = run(work, old, [good, wrong, short])
    assert results[0] == ok(new, good)
    assert results[1].startswith("error 204 ")
    assert results[2].startswith("error 206 patch truncated")


# ---- refusals, before anything is made
def _refused():
    old, new = PAIRS["esp"]
    none = _detools(old, new, compression="none")
    cases = {
        "in-place": (_detools(old, new, compression="none", patch_type="in-place",
                              memory_size=PART_SIZE, segment_size=0x10000), "patch type 1"),
        "data-format": (_detools(old, new, compression="none", data_format="xtensa-lx106",
                                 from_data_offset_begin=0, from_data_offset_end=0, from_data_begin=0,
                                 from_data_end=0, from_code_begin=0, from_code_end=0x1000,
                                 to_data_offset_begin=0, to_data_offset_end=0, to_data_begin=0,
                                 to_data_end=0, to_code_begin=0, to_code_end=0x1000), "data format"),
        "heatshrink-9-7": (_detools(old, new, compression="heatshrink", heatshrink_window_sz2=9),
                           "heatshrink: only window 8, lookahead 7"),
        "heatshrink-8-4": (_detools(old, new, compression="heatshrink", heatshrink_lookahead_sz2=4),
                           "heatshrink: only window 8, lookahead 7"),
        "zlib-wbits-13": (_zlib(none, 13), "zlib window 8192"),
        "zlib-wbits-15": (_zlib(none, 15), "zlib window 32768"),
        "zlib-dictionary": (b"\x48\x20" + none, "bad zlib header"),
        "heatshrink-in-zlib": (_zlib(_detools(old, new, compression="heatshrink"), 12), "compression 4"),
    }
    for name, number in (("lzma", 1), ("crle", 2), ("bz2", 3), ("zstd", 5), ("lz4", 6)):
        cases[name] = (_detools(old, new, compression=name), "detools compression %d" % number)
    # hdiffpatch needs real files in detools
    import tempfile

    import detools

    with tempfile.TemporaryDirectory() as d:
        open(d + "/o", "wb").write(old)
        open(d + "/n", "wb").write(new)
        detools.create_patch_filenames(d + "/o", d + "/n", d + "/p", compression="none",
                                       patch_type="hdiffpatch", algorithm="hdiffpatch")
        cases["hdiffpatch"] = (open(d + "/p", "rb").read(), "patch type 2")
    return cases


def _zlib(data, wbits):
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_a_512_byte_window_costs_the_package_nothing(kind):
    """Why the tool writes wbits 9: a patch's redundancy is local (runs of zero diff bytes),
    so the package is within 0.1 % of what a 4 KiB window gives, for 3.5 KiB less heap on the
    board."""
    old, new = PAIRS[kind]
    none = _detools(old, new, compression="none")
    assert len(_zlib(none, 9)) <= len(_zlib(none, 12)) * 1.001


def test_every_accepted_zlib_window_applies(work):
    """The tool writes a 512-byte window (wbits 9); packages made elsewhere with up to 4 KiB
    (wbits 12) apply as well."""
    old, new = PAIRS["esp"]
    none = _detools(old, new, compression="none")
    packages = [_zlib(none, wbits) for wbits in (9, 10, 11, 12)]
    assert [p[0] >> 4 for p in packages] == [1, 2, 3, 4]  # CINFO: the window in the header
    results, _ = run(work, old, packages)
    assert results == [ok(new, p) for p in packages]


def test_unsupported_formats_are_refused_before_a_byte_is_made(work):
    old, new = PAIRS["esp"]
    cases = _refused()
    names = sorted(cases)
    out = work / "refused.bin"
    results, _ = run(work, old, [cases[n][0] for n in names], out=str(out))
    for name, result in zip(names, results):
        assert result.startswith("error 206 ") and cases[name][1] in result, (name, result)
    assert not out.exists()
    # the same behind an esp_delta_ota header
    results, _ = run(work, old, [esp_header(old) + cases[n][0] for n in names])
    for name, result in zip(names, results):
        assert result.startswith("error 206 ") and cases[name][1] in result, (name, result)


def test_new_image_larger_than_the_slot_is_102(work):
    old, new = PAIRS["esp"]
    results, _ = run(work, old, [make_patch(old, new, c) for c in COMPRESSIONS], slot_size=len(new) - 1)
    assert all(r.startswith("error 102 new image of %d bytes" % len(new)) for r in results), results


# ---- corrupt and truncated patches: Fail, never a hang or another exception
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_truncated_and_trailing_data(work, compression):
    old, new = PAIRS["deletions"]
    package = make_patch(old, new, compression)
    cuts = [0, 1, 2, 5, len(package) // 3, len(package) // 2, len(package) - 2, len(package) - 1]
    patches = [package[:n] for n in cuts] + [package + b"\0", package + b"\xff" * 600]
    results, _ = run(work, old, patches, chunk=33)
    for n, result in zip(cuts, results):
        assert result.startswith("error 206 "), (n, result)
    assert results[-2].startswith("error 206 ") and results[-1].startswith("error 206 "), results[-2:]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_corrupt_bytes_end_in_an_error_or_other_bytes(work, compression):
    old, new = PAIRS["edits"]
    package = make_patch(old, new, compression)
    rng = random.Random(compression)
    patches = []
    # the headers, then anywhere
    for at in list(range(8)) + [rng.randrange(len(package)) for _ in range(40)]:
        bad = bytearray(package)
        bad[at] ^= 1 << rng.randrange(8)
        patches.append(bytes(bad))
    results, _ = run(work, old, patches, timeout=60)
    for bad, result in zip(patches, results):
        assert result.startswith("error 206 ") or result.startswith("error 102 ") or \
            result.startswith("ok "), result
        if result.startswith("ok "):
            # the decoder could not tell: the package MD5 the caller computed differs
            _, size, image, md5 = result.split()
            assert md5 == hashlib.md5(bad).hexdigest() != hashlib.md5(package).hexdigest()
            if compression == "zlib":  # Adler-32: only a bit deflate never reads goes through
                assert image == hashlib.md5(new).hexdigest()


# ---- heap
def test_heap_fixed_buffers_and_import_budget(work, compiled):
    old, new = PAIRS["esp"]
    packages = [make_patch(old, new, c, header=True) for c in COMPRESSIONS]
    results, info = run(work, old, packages, heapsize="48k",
                        path=micropython.micropypath(compiled))
    assert results == [ok(new, p) for p in packages]
    cost = int(info["import"][0])
    assert cost <= IMPORT_BUDGET, "delta + _deltav import: %d bytes of heap" % cost
    # gc disabled across the loop: not one byte more than the caller's own last short read
    assert all(int(g) <= 0 for g in info["growth"]), info["growth"]


# ---- the host tool
def package(*args):
    return subprocess.run([sys.executable, "-m", "tools", "package", "delta", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_tool_makes_the_package_the_device_applies(tmp_path, work):
    old, new = PAIRS["esp"]
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    out = tmp_path / "out.delta"
    result = package(str(tmp_path / "old.bin"), str(tmp_path / "new.bin"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data == make_patch(old, new, "zlib", header=True)  # the base check by default
    assert data[:4] == b"\x10\xde\xcd\xfc" and data[4:36] == old[-32:]
    assert data[ESP_HEADER_LEN] == 0x18  # zlib CMF: deflate, wbits 9
    assert "size  %d\n" % len(data) in result.stdout
    assert "md5   %s\n" % hashlib.md5(data).hexdigest() in result.stdout
    assert "%.1f%% of the full image" % (100 * len(data) / len(new)) in result.stdout
    results, _ = run(work, old, [data])
    assert results == [ok(new, data)]

    result = package(str(tmp_path / "old.bin"), str(tmp_path / "new.bin"), "-o", str(out),
                     "--compression", "heatshrink", "--no-esp-header", "--json")
    info = json.loads(result.stdout)
    data = out.read_bytes()
    assert info["ok"] and info["size"] == len(data) and info["md5"] == hashlib.md5(data).hexdigest()
    assert not info["esp_header"] and data == make_patch(old, new, "heatshrink") and data[0] == 0x04


def test_tool_refuses_what_is_not_an_app_image(tmp_path):
    old, new = PAIRS["esp"]
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "bad.bin").write_bytes(new[:-40])
    result = package(str(tmp_path / "old.bin"), str(tmp_path / "bad.bin"), "-o", str(tmp_path / "x"))
    assert result.returncode == 1 and "REFUSED NEW" in result.stderr
    assert not (tmp_path / "x").exists()
    result = package(str(tmp_path / "nope.bin"), str(tmp_path / "old.bin"), "-o", str(tmp_path / "x"))
    assert result.returncode == 2
