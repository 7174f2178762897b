"""``python -m tools package fota FILE.bin --version V``: is this the right file to upload?

Checks FILE as ESP-IDF checks an app image before it boots it, with esptool: magic 0xE9,
the chip id (--chip), every segment, the XOR checksum, the appended SHA-256 digest, and the
version in the app description, which must equal --version (the target version of the
OneNET task: a device refuses to keep an image whose version is not the target). It also
checks that the image fits the OTA slot.

Then it prints the size and MD5 as OneNET shows them once the file is uploaded: compare
them with the console before starting the task.

Refused, with the reason: a combined flash image (bootloader + partition table + app, as
written by cable with `esptool write_flash`, e.g. MicroPython's downloadable firmware .bin):
OneNET needs the app alone (micropython.bin in the build directory); an image for another
chip; a version other than --version; a damaged image.

Exit status: 0 the image is fit to upload, 1 refused, 2 usage (e.g. FILE cannot be read).
"""
import argparse

SLOT_SIZE = 0x180000  # MicroPython's partitions-4MiB-ota.csv: ota_0 and ota_1
TABLE_OFFSET = 0x8000  # the partition table's flash address on every ESP32 chip
# where the second-stage bootloader sits in flash (and a combined image starts)
BOOTLOADER_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000}  # 0x0 on the later chips


def configure(parser: argparse.ArgumentParser):
    from sim.esp_image import CHIPS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("file", metavar="FILE.bin", help="the app image (e.g. build-ESP32_GENERIC_OTA/micropython.bin)")
    parser.add_argument("--version", required=True,
                        help="the target version of the task; the image's app description must say the same")
    parser.add_argument("--chip", choices=sorted(CHIPS), default="esp32", metavar="CHIP",
                        help="the chip of the boards (default %(default)s; one of: %(choices)s)")
    parser.add_argument("--slot-size", type=lambda v: int(v, 0), default=SLOT_SIZE, metavar="BYTES",
                        help="size of the boards' OTA app slot (default %#x, MicroPython's 4 MiB OTA "
                             "partition table)" % SLOT_SIZE)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def combined_image(data: bytes, chip: str):
    """(why, app offset or None) if `data` looks like a whole-flash image, else None."""
    from sim.device import TABLE_MAX, TYPE_APP, parse_partition_table

    for base in sorted({BOOTLOADER_OFFSET.get(chip, 0), 0, 0x1000}):
        at = TABLE_OFFSET - base
        if len(data) < at + 32 or data[at:at + 2] != b"\xaa\x50":
            continue
        app = None
        try:
            parts = parse_partition_table(data[at:at + TABLE_MAX].ljust(TABLE_MAX, b"\xff"))
            apps = [p for p in parts if p[1] == TYPE_APP and p[3] - base < len(data)]
            if apps:
                app = (apps[0][0], apps[0][3] - base)
        except ValueError:
            pass
        why = ("a partition table at file offset %#x (flash %#x): a combined flash image, made to be "
               "written at %#x with `esptool write_flash`" % (at, TABLE_OFFSET, base))
        return why, app
    for boot_at in (0x1000, 0x0):
        if boot_at and len(data) > boot_at and data[0] == 0xFF and data[boot_at] == 0xE9:
            return "erased flash, then an image at %#x: a dump of a whole flash" % boot_at, None
    return None


def main(args) -> int:
    import hashlib
    import json
    import sys
    from pathlib import Path

    from sim.esp_image import CHIPS, CHIP_NAMES, validate_app_image
    from tools.mockplatform.state import valid_version

    name = Path(args.file).name

    def refuse(reason, hint=None):
        if args.json:
            print(json.dumps({"ok": False, "file": args.file, "reason": reason, "hint": hint}))
        else:
            print("package fota: REFUSED %s: %s" % (name, reason), file=sys.stderr)
            if hint:
                print("  " + hint, file=sys.stderr)
        return 1

    if not valid_version(args.version):
        print("package fota: --version %r: OneNET versions are 1-20 characters of A-Z a-z 0-9 . _ -"
              % args.version, file=sys.stderr)
        return 2
    try:
        data = Path(args.file).read_bytes()
    except OSError as error:
        print("package fota: cannot read %s: %s" % (args.file, error.strerror or error), file=sys.stderr)
        return 2

    combined = combined_image(data, args.chip)
    if combined:
        why, app = combined
        hint = ("OneNET needs the app image alone: micropython.bin in the build directory "
                "(ports/esp32/build-BOARD/micropython.bin).")
        if app:
            hint += (" The app in this file is partition %r at file offset %#x: "
                     "tail -c +%d %s > app.bin" % (app[0], app[1], app[1] + 1, args.file))
        return refuse("%s, not an app image" % why, hint)
    try:
        info = validate_app_image(data, chip=args.chip)
    except ValueError as error:
        reason = str(error)
        hint = None
        if reason.startswith("wrong chip"):
            hint = "build for %s, or pass --chip %s if the boards are that chip" % (
                args.chip, CHIP_NAMES.get(int.from_bytes(data[12:14], "little"), "?"))
        elif reason.startswith("no app description"):
            hint = "a bootloader or another non-app image? OneNET needs the app (micropython.bin)"
        elif "checksum" in reason or "SHA-256" in reason or "truncated" in reason:
            hint = "the file is damaged or incomplete: build or download it again"
        return refuse("not a valid %s app image: %s" % (args.chip, reason), hint)
    if info["version"] != args.version:
        return refuse("version mismatch: the image's app description says %r, --version is %r"
                      % (info["version"], args.version),
                      "a device keeps a new image only if it runs the task's target version: "
                      "set the target to %r, or rebuild with the version you mean" % info["version"])
    if len(data) > args.slot_size:
        return refuse("%d bytes do not fit the OTA slot of %d bytes (the device would report 102)"
                      % (len(data), args.slot_size))
    trailing = len(data) - info["size"]
    md5 = hashlib.md5(data).hexdigest()
    result = {"ok": True, "file": args.file, "size": len(data), "md5": md5, "version": info["version"],
              "chip": info["chip"], "chip_id": CHIPS[info["chip"]], "project": info["project"],
              "segments": info["segments"], "sha256_appended": info["hash_appended"],
              "image_size": info["size"], "trailing_bytes": trailing, "slot_size": args.slot_size}
    if args.json:
        print(json.dumps(result))
        return 0
    print("ok: %s is an app image for %s, version %s (project %s), %d segments, checksum ok%s" % (
        name, info["chip"], info["version"], info["project"] or "?", info["segments"],
        ", SHA-256 ok" if info["hash_appended"] else ", no SHA-256 appended"))
    print("    fills %d%% of a %d KiB OTA slot" % (len(data) * 100 // args.slot_size, args.slot_size // 1024))
    if trailing:
        print("    note: %d bytes follow the end of the image; they are downloaded and hashed too" % trailing)
    print("upload it to OneNET as a firmware (FOTA) full package with target version %s;" % args.version)
    print("the platform will show:")
    print("  size  %d" % len(data))
    print("  md5   %s" % md5)
    return 0
