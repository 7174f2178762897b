"""A fake ESP32 on the host: its flash, its second-stage bootloader and its power switch.

A device is a directory:

    flash.bin          the whole SPI flash, 4 MiB (or 16 MiB: flash_mib=16) (partition table
                       at 0x8000, otadata, slots)
    erase_counts.bin   one little-endian u16 per 4 KiB sector: erases since the device was made
    corruption.log     "address old new" per write that needed a 0 -> 1 bit (NOR violation)
    bootinfo           "<running label> <chip id> <reset cause>", written by the bootloader
                       for the fake esp32/machine modules (as the chip knows it from its ROM)
    reset_next         the cause of the coming boot, left by machine.reset()/deepsleep()/...
    uid                the 6-byte base MAC (machine.unique_id())
    bootloader.log     what the bootloader did, every boot
    fs/                the board's filesystem (boot.py, main.py, ...): the cwd of each run

``Device.boot()`` is a reset: the bootloader (ESP-IDF's, with app rollback enabled, as in
MicroPython's OTA builds) picks the slot, then the unix ``micropython`` runs the board
runner ``sim/board/_board.py`` (boot.py then main.py) with sim/board/ on its path.
"""
from __future__ import annotations

import hashlib
import re
import signal
import struct
import subprocess
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from sim import micropython
from sim.esp_image import CHIPS, validate_app_image

# exit codes of the fake machine module (sim/board/machine.py)
RESET_EXIT = 99        # machine.reset()
DEEPSLEEP_EXIT = 98    # machine.deepsleep()
SOFT_RESET_EXIT = 97   # machine.soft_reset()
WDT_EXIT = 96          # a starved machine.WDT
# a power cut by the fake esp32 at the point $FAKE_ESP32_CUT names (sim/board/esp32.py):
# the process dies by SIGUSR1, told apart from a SIGKILL from outside (-9)
CUT_EXIT = -signal.SIGUSR1
CUT_PATTERN = re.compile(r"(writes|erases)=[1-9][0-9]*(:[0-9]+)?|(set_boot|mark_valid)(=(before|erased|after))?")
# machine.reset_cause() values
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5

FLASH_SIZE = 4 * 1024 * 1024
SECTOR = 4096
TABLE_OFFSET = 0x8000
TABLE_MAX = 0xC00
TYPE_APP, TYPE_DATA = 0, 1
SUBTYPE_OTA_DATA, SUBTYPE_OTA_0, SUBTYPE_FAT = 0x00, 0x10, 0x81
# MicroPython's ports/esp32/partitions-4MiB-ota.csv; "vfs" is not in the table:
# main.c registers it at run time over the rest of the flash.
PARTITIONS = (
    ("nvs", TYPE_DATA, 0x02, 0x9000, 0x4000),
    ("otadata", TYPE_DATA, SUBTYPE_OTA_DATA, 0xD000, 0x2000),
    ("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
    ("ota_0", TYPE_APP, 0x10, 0x10000, 0x180000),
    ("ota_1", TYPE_APP, 0x11, 0x190000, 0x180000),
)
# A 16 MiB board with room for big firmware (Device(flash_mib=16)): the same head, two 6 MiB
# OTA slots, "vfs" over the rest (3.9 MiB), as a custom 16 MiB ESP32 build might have it.
PARTITIONS_16MIB = PARTITIONS[:3] + (
    ("ota_0", TYPE_APP, 0x10, 0x10000, 0x600000),
    ("ota_1", TYPE_APP, 0x11, 0x610000, 0x600000),
)
LAYOUTS = {4: PARTITIONS, 16: PARTITIONS_16MIB}  # flash MiB -> partition table

# esp_ota_img_states_t
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED = 0, 1, 2, 3, 4, 0xFFFFFFFF
STATE_NAMES = {NEW: "NEW", PENDING_VERIFY: "PENDING_VERIFY", VALID: "VALID",
               INVALID: "INVALID", ABORTED: "ABORTED", UNDEFINED: "UNDEFINED"}
SEQ_ERASED = 0xFFFFFFFF


def partition_table(parts=PARTITIONS) -> bytes:
    """ESP-IDF's binary partition table: 32-byte entries (magic 0x50AA), an MD5 entry
    (magic 0xEBEB, 14 x 0xFF, MD5 of the entries), then 0xFF up to 0xC00 bytes."""
    body = b"".join(
        struct.pack("<HBBII16sI", 0x50AA, t, s, addr, size, label.encode(), 0)
        for label, t, s, addr, size in parts)
    md5 = b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    return (body + md5).ljust(TABLE_MAX, b"\xff")


def parse_partition_table(raw: bytes) -> list[tuple]:
    """(label, type, subtype, addr, size) per entry; ValueError if the table is damaged."""
    parts = []
    for at in range(0, TABLE_MAX, 32):
        magic, t, s, addr, size, label, _ = struct.unpack_from("<HBBII16sI", raw, at)
        if magic == 0xEBEB:
            if raw[at + 16:at + 32] != hashlib.md5(raw[:at]).digest():
                raise ValueError("partition table MD5 mismatch")
            return parts
        if magic != 0x50AA:
            break
        parts.append((label.split(b"\0")[0].decode(), t, s, addr, size))
    raise ValueError("partition table without MD5 entry")


def ota_entry(seq: int, state: int, label: bytes = b"\xff" * 20) -> bytes:
    """esp_ota_select_entry_t with crc = crc32_le(UINT32_MAX, &ota_seq, 4)."""
    seq_bytes = struct.pack("<I", seq)
    return seq_bytes + label + struct.pack("<II", state, zlib.crc32(seq_bytes, 0xFFFFFFFF))


class Flash:
    """The device's flash.bin seen from the host, with the same NOR rules as the fake."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root / "flash.bin"

    def read(self, addr: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(addr)
            return f.read(n)

    def erase_sector(self, addr: int) -> None:
        assert addr % SECTOR == 0
        with open(self.path, "r+b") as f:
            f.seek(addr)
            f.write(b"\xff" * SECTOR)
        with open(self.root / "erase_counts.bin", "r+b") as f:
            f.seek(addr // SECTOR * 2)
            n, = struct.unpack("<H", f.read(2))
            f.seek(addr // SECTOR * 2)
            f.write(struct.pack("<H", n + 1))

    def write(self, addr: int, data: bytes) -> None:
        old = self.read(addr, len(data))
        bad = [(addr + i, o, w) for i, (o, w) in enumerate(zip(old, data)) if w & ~o & 0xFF]
        if bad:
            with open(self.root / "corruption.log", "a") as f:
                f.writelines("%d %d %d\n" % b for b in bad)
        with open(self.path, "r+b") as f:
            f.seek(addr)
            f.write(bytes(o & w for o, w in zip(old, data)))


@dataclass
class BootResult:
    returncode: int | None    # None when the bootloader found nothing to boot
    output: str               # stdout and stderr of the run, interleaved
    slot: str | None          # the partition label that was booted
    reset_cause: int          # what machine.reset_cause() said in this run
    rolled_back: bool = False  # a PENDING_VERIFY app was aborted by this boot
    bricked: bool = False     # no slot held a valid image: micropython did not run
    bootlog: list[str] = field(default_factory=list)

    @property
    def reset(self) -> bool:
        return self.returncode == RESET_EXIT

    @property
    def cut(self) -> bool:
        """The power died at the point asked for with ``cut=``."""
        return self.returncode == CUT_EXIT


class Device:
    def __init__(self, root: Path, *, image: bytes | None = None, chip: str = "esp32",
                 flash_mib: int = 4):
        """Create the device in `root` (the flash erased, the partition table written and
        `image` in ota_0, as a factory flash does), or reopen it as it was left.
        flash_mib: 4 (MicroPython's 4 MiB OTA layout, 1.5 MiB slots) or 16 (6 MiB slots,
        ``PARTITIONS_16MIB``); a reopened device keeps the size its flash.bin has."""
        self.root = Path(root).resolve()
        self.chip = chip
        self.chip_id = CHIPS[chip]
        self.flash = Flash(self.root)
        self.fs = self.root / "fs"
        if (self.root / "flash.bin").exists():
            self.flash_size = (self.root / "flash.bin").stat().st_size
            return
        if flash_mib not in LAYOUTS:
            raise ValueError("flash_mib: one of %s" % sorted(LAYOUTS))
        self.flash_size = flash_mib * 1024 * 1024
        layout = LAYOUTS[flash_mib]
        self.fs.mkdir(parents=True, exist_ok=True)
        flash = bytearray(b"\xff" * self.flash_size)
        flash[TABLE_OFFSET:TABLE_OFFSET + TABLE_MAX] = partition_table(layout)
        if image is not None:
            _, _, _, addr, size = next(p for p in layout if p[0] == "ota_0")
            if len(image) > size:
                raise ValueError("image larger than ota_0")
            flash[addr:addr + len(image)] = image
        (self.root / "flash.bin").write_bytes(flash)
        (self.root / "erase_counts.bin").write_bytes(bytes(2 * self.flash_size // SECTOR))
        (self.root / "uid").write_bytes(b"\x24\x0a\xc4" + hashlib.sha256(bytes(self.root)).digest()[:3])

    # ---- the partition table as the device has it
    def partitions(self) -> list[tuple]:
        """(label, type, subtype, addr, size), "vfs" included as MicroPython registers it."""
        parts = parse_partition_table(self.flash.read(TABLE_OFFSET, TABLE_MAX))
        end = max(addr + size for _, _, _, addr, size in parts)
        if end < self.flash_size and not any(p[0] in ("vfs", "ffat") for p in parts):
            parts.append(("vfs", TYPE_DATA, SUBTYPE_FAT, end, self.flash_size - end))
        return parts

    def _entry(self, label: str) -> tuple:
        for p in self.partitions():
            if p[0] == label:
                return p
        raise KeyError(label)

    def _slots(self) -> list[tuple]:
        slots = sorted((p for p in self.partitions() if p[1] == TYPE_APP and p[2] & 0xF0 == 0x10),
                       key=lambda p: p[2])
        return [p for i, p in enumerate(slots) if p[2] == SUBTYPE_OTA_0 + i]

    # ---- inspection
    def read(self, addr: int, n: int) -> bytes:
        return self.flash.read(addr, n)

    def partition(self, label: str) -> bytes:
        _, _, _, addr, size = self._entry(label)
        return self.flash.read(addr, size)

    def slot_image(self, label: str) -> bytes:
        """The app image in a slot, cut to its length; ValueError if it is not valid."""
        data = self.partition(label)
        return data[:validate_app_image(data, chip=self.chip)["size"]]

    def erase_counts(self) -> dict[int, int]:
        """sector number (address // 4096) -> erases, for the sectors erased at least once."""
        raw = (self.root / "erase_counts.bin").read_bytes()
        counts = struct.unpack("<%dH" % (len(raw) // 2), raw)
        return {i: n for i, n in enumerate(counts) if n}

    def corruptions(self) -> list[tuple[int, int, int]]:
        """(address, old byte, new byte) of every write that needed a 0 -> 1 bit."""
        log = self.root / "corruption.log"
        if not log.exists():
            return []
        return [tuple(int(v) for v in line.split()) for line in log.read_text().splitlines()]

    def boot_state(self) -> list[dict]:
        """Both otadata entries, decoded."""
        _, _, _, addr, _ = self._by_subtype(TYPE_DATA, SUBTYPE_OTA_DATA)
        n = len(self._slots())
        out = []
        for i in (0, 1):
            raw = self.flash.read(addr + i * SECTOR, 32)
            seq, state, crc = struct.unpack_from("<I", raw)[0], *struct.unpack_from("<II", raw, 24)
            crc_ok = crc == zlib.crc32(raw[:4], 0xFFFFFFFF)
            valid = crc_ok and seq != SEQ_ERASED and state not in (INVALID, ABORTED)
            out.append({"sector": i, "seq": seq, "state": state,
                        "state_name": STATE_NAMES.get(state, hex(state)), "crc_ok": crc_ok,
                        "valid": valid, "slot": "ota_%d" % ((seq - 1) % n) if seq != SEQ_ERASED else None})
        return out

    def running_slot(self) -> str | None:
        info = self.root / "bootinfo"
        return info.read_text().split()[0] if info.exists() else None

    def bootloader_log(self) -> str:
        log = self.root / "bootloader.log"
        return log.read_text() if log.exists() else ""

    def _by_subtype(self, t: int, s: int) -> tuple:
        for p in self.partitions():
            if p[1] == t and p[2] == s:
                return p
        raise KeyError((t, s))

    # ---- cable operations
    def flash_image(self, label: str, image: bytes) -> None:
        """Write an image into a slot as `esptool write_flash` does (erase, then write)."""
        _, _, _, addr, size = self._entry(label)
        if len(image) > size:
            raise ValueError(f"image larger than {label}")
        for a in range(addr, addr + len(image), SECTOR):
            self.flash.erase_sector(a)
        self.flash.write(addr, image)

    # ---- the bootloader
    def bootloader(self) -> tuple[str | None, bool, int, list[str]]:
        """One reset: returns (slot booted or None, rolled_back, reset cause, log lines).

        ESP-IDF's bootloader_utility_get_selected_boot_partition() and
        bootloader_utility_load_boot_image() with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and
        no factory partition. A soft reset does not pass through the bootloader."""
        log: list[str] = []
        nxt = self.root / "reset_next"
        cause = int(nxt.read_text()) if nxt.exists() else PWRON_RESET
        nxt.unlink(missing_ok=True)
        if cause == SOFT_RESET and self.running_slot():
            slot = self.running_slot()
            log.append("soft reset: bootloader not run, %s keeps running" % slot)
            return self._booted(slot, False, cause, log)
        try:
            slots = self._slots()
            _, _, _, ota_addr, _ = self._by_subtype(TYPE_DATA, SUBTYPE_OTA_DATA)
        except (ValueError, KeyError) as e:
            log.append("invalid partition table: %s" % e)
            return self._booted(None, False, cause, log)
        ents = [self.flash.read(ota_addr + i * SECTOR, 32) for i in (0, 1)]

        def field(i, at):
            return struct.unpack_from("<I", ents[i], at)[0]

        def write_otadata(i, raw):
            self.flash.erase_sector(ota_addr + i * SECTOR)
            self.flash.write(ota_addr + i * SECTOR, raw)
            ents[i] = raw

        def crc_ok(i):
            return field(i, 28) == zlib.crc32(ents[i][:4], 0xFFFFFFFF)

        def invalid(i):
            return field(i, 0) == SEQ_ERASED or field(i, 24) in (INVALID, ABORTED)

        rolled_back = False
        for i in (0, 1):
            if field(i, 24) == PENDING_VERIFY:
                log.append("otadata[%d] was PENDING_VERIFY at reset: marking ABORTED (rollback)" % i)
                write_otadata(i, ents[i][:24] + struct.pack("<I", ABORTED) + ents[i][28:])
                rolled_back = True
        initial = False
        if invalid(0) and invalid(1):
            start = 0
            log.append("No factory image, trying OTA 0")
            initial = all(field(i, 0) == SEQ_ERASED or not crc_ok(i) for i in (0, 1))
        else:
            valid = [not invalid(i) and crc_ok(i) for i in (0, 1)]
            if valid[0] and valid[1]:
                active = 0 if field(0, 0) >= field(1, 0) else 1
            else:
                active = 0 if valid[0] else 1 if valid[1] else -1
            if active < 0:
                start = -1  # no factory: try every slot
                log.append("ota data partition invalid and no factory, will try all partitions")
            else:
                start = (field(active, 0) - 1) % len(slots)
                log.append("otadata[%d] active: seq %d -> %s" % (active, field(active, 0), slots[start][0]))
                if field(active, 24) == NEW:
                    log.append("otadata[%d] is NEW: marking PENDING_VERIFY" % active)
                    write_otadata(active, ents[active][:24] + struct.pack("<I", PENDING_VERIFY)
                                  + ents[active][28:])
        order = list(range(start, -1, -1)) + list(range(start + 1, len(slots)))
        for index in order:
            label, _, _, addr, size = slots[index]
            try:
                validate_app_image(self.flash.read(addr, size), chip=self.chip)
            except ValueError as e:
                log.append("OTA app partition slot %d is not bootable: %s" % (index, e))
                continue
            if initial:
                write_otadata(0, ota_entry(index + 1, VALID))
                log.append("Set actual ota_seq=%d in otadata[0]" % (index + 1))
            log.append("Loaded app from partition at offset %#x (%s)" % (addr, label))
            return self._booted(label, rolled_back, cause, log)
        log.append("No bootable app partitions in the partition table")
        return self._booted(None, rolled_back, cause, log)

    def _booted(self, slot, rolled_back, cause, log):
        with open(self.root / "bootloader.log", "a") as f:
            f.writelines(line + "\n" for line in log + ["---"])
        if slot is not None:
            (self.root / "bootinfo").write_text("%s %d %d\n" % (slot, self.chip_id, cause))
        return slot, rolled_back, cause, log

    # ---- runs
    def _command(self, args, heapsize, env, extra_path, cut):
        full_env = {"FAKE_ESP32_DIR": str(self.root), "FAKE_ESP32_CUT": ""}
        if cut:
            if not CUT_PATTERN.fullmatch(cut):
                raise ValueError("cut=%r: writes=N[:K], erases=N[:K], set_boot[=before|erased|after]"
                                 " or mark_valid[=...]" % cut)
            full_env["FAKE_ESP32_CUT"] = cut
        full_env.update(env or {})
        return dict(args=micropython.command(list(args or ["-m", "_board"]), heapsize),
                    env=micropython.environment(micropython.micropypath(*extra_path), full_env),
                    cwd=str(self.fs))

    def boot(self, args=None, *, heapsize=None, timeout=60, env=None, extra_path=(),
             cut=None) -> BootResult:
        """Reset the device and run it to the end (main.py returns, or a reset/exit).

        cut: where the power dies in this run (``result.cut`` then holds): ``"writes=N[:K]"``
        inside the Nth flash program after K of its bytes, ``"erases=N[:K]"`` inside the Nth
        sector erase after K of its bytes, ``"set_boot=before|erased|after"`` or
        ``"mark_valid=..."`` around the otadata rewrite of those calls (sim/board/esp32.py)."""
        slot, rolled_back, cause, log = self.bootloader()
        if slot is None:
            return BootResult(None, "", None, cause, rolled_back, True, log)
        cmd = self._command(args, heapsize, env, extra_path, cut)
        proc = subprocess.run(cmd.pop("args"), **cmd, timeout=timeout, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="backslashreplace")
        return BootResult(proc.returncode, proc.stdout, slot, cause, rolled_back, False, log)

    def start(self, args=None, *, heapsize=None, env=None, extra_path=(), cut=None) -> "Running":
        """Reset the device and start it in the background (for power cuts: ``cut=`` as
        for boot(), or Running.kill_when())."""
        slot, rolled_back, cause, log = self.bootloader()
        if slot is None:
            raise RuntimeError("bricked: no bootable app\n" + "\n".join(log))
        cmd = self._command(args, heapsize, env, extra_path, cut)
        proc = subprocess.Popen(cmd.pop("args"), **cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="backslashreplace", bufsize=1)
        return Running(proc, BootResult(None, "", slot, cause, rolled_back, False, log))


class Running:
    """A device that is running: cut its power when it prints a line, or wait for it."""

    def __init__(self, proc: subprocess.Popen, result: BootResult):
        self.proc = proc
        self.result = result
        self.lines: list[str] = []

    def kill_when(self, pattern: str, timeout: float = 30) -> str:
        """Wait for an output line matching `pattern` (re.search), then SIGKILL at once:
        a power cut. Returns the output so far; RuntimeError if the device ended first."""
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                self.lines.append(line)
                if re.search(pattern, line):
                    self.proc.kill()
                    break
            else:
                self.proc.wait()
                raise RuntimeError("device ended (rc %s) before %r:\n%s"
                                   % (self.proc.returncode, pattern, "".join(self.lines)))
        finally:
            timer.cancel()
        self.proc.wait()
        self.proc.stdout.close()
        return "".join(self.lines)

    def wait(self, timeout: float = 60) -> BootResult:
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines.append(out)
        self.result.returncode = self.proc.returncode
        self.result.output = "".join(self.lines)
        return self.result

    def kill(self) -> str:
        self.proc.kill()
        return self.wait().output
