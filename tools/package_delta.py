"""``python -m tools package delta OLD.bin NEW.bin -o OUT``: a differential firmware package.

Makes a detools "sequential" patch from OLD (the image the boards run now) to NEW and writes
it in the form the device's delta decoder applies while it downloads:

  zlib        (default) the uncompressed patch inside a zlib stream with a 512-byte window
              (wbits 9): the smallest, and inflated in C on the board
  heatshrink  detools' heatshrink compression, window 8 / lookahead 7 (as ESP-IDF's
              esp_delta_ota), for other tools that expect it
  none        the uncompressed patch

esp_delta_ota's 64-byte header goes in front (magic 0xfccdde10, the SHA-256 of OLD as the
board computes it for its running image): the board refuses the package (report 204, nothing
written) unless it runs exactly OLD. --no-esp-header leaves it out; then the task's source
version on the platform is the only guard.

Both images are checked as ESP app images (chip, checksum, digest); the patch is applied on
this machine and must give NEW byte for byte. Prints the size and MD5 OneNET shows once the
file is uploaded as a differential package, and the ratio to the full image.

Exit status: 0 written, 1 refused (the reason is printed), 2 usage (e.g. a file cannot be read).
"""
import argparse

ESP_DELTA_MAGIC = 0xFCCDDE10
ESP_HEADER_LEN = 64
# The board inflates with a window of at most 4 KiB (wbits 12), allocated in one piece in the
# middle of a download. A patch's redundancy is local (runs of zero diff bytes): measured on
# the test pairs, a 512-byte window gives packages within 0.1 % of a 4 KiB one, and the board
# needs 3.5 KiB less contiguous heap.
ZLIB_WBITS = 9


def configure(parser: argparse.ArgumentParser):
    from sim.esp_image import CHIPS
    from tools.package_fota import SLOT_SIZE

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("old", metavar="OLD.bin", help="the app image the boards run now (the base)")
    parser.add_argument("new", metavar="NEW.bin", help="the app image to upgrade to")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="the package to write")
    parser.add_argument("--compression", choices=("zlib", "heatshrink", "none"), default="zlib",
                        help="how the patch is compressed (default %(default)s)")
    parser.add_argument("--no-esp-header", dest="esp_header", action="store_false",
                        help="leave out esp_delta_ota's 64-byte header (the base image's SHA-256, "
                             "which the board checks before it writes anything)")
    parser.add_argument("--chip", choices=sorted(CHIPS), default="esp32", metavar="CHIP",
                        help="the chip of the boards (default %(default)s)")
    parser.add_argument("--slot-size", type=lambda v: int(v, 0), default=SLOT_SIZE, metavar="BYTES",
                        help="size of the boards' OTA app slot (default %#x)" % SLOT_SIZE)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def base_sha256(old: bytes) -> bytes:
    """What the board compares with the header: its running image's appended SHA-256 (as
    esp_partition_get_sha256() and `esptool image-info` give it)."""
    from sim.esp_image import validate_app_image

    info = validate_app_image(old)
    if not info["hash_appended"]:
        raise ValueError("the base image has no appended SHA-256 for the board to check: "
                         "--no-esp-header makes a package without that check")
    end = info["size"]
    return old[end - 32:end]


def esp_header(old: bytes) -> bytes:
    return ESP_DELTA_MAGIC.to_bytes(4, "little") + base_sha256(old) + bytes(ESP_HEADER_LEN - 36)


def make_patch(old: bytes, new: bytes, compression: str = "zlib", header: bool = False) -> bytes:
    """The package bytes (no image checks: see main())."""
    import io
    import zlib

    import detools

    patch = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), patch, patch_type="sequential",
                         compression="heatshrink" if compression == "heatshrink" else "none",
                         heatshrink_window_sz2=8, heatshrink_lookahead_sz2=7)
    body = patch.getvalue()
    if compression == "zlib":
        z = zlib.compressobj(9, zlib.DEFLATED, ZLIB_WBITS)
        body = z.compress(body) + z.flush()
    elif compression not in ("none", "heatshrink"):
        raise ValueError("compression %r" % compression)
    return (esp_header(old) if header else b"") + body


def apply_package(old: bytes, package: bytes) -> bytes:
    """Apply a package as the board does, with detools: the check main() makes."""
    import io
    import zlib

    import detools

    if package[:4] == ESP_DELTA_MAGIC.to_bytes(4, "little"):
        package = package[ESP_HEADER_LEN:]
    if package and package[0] & 0x0F == 8:
        package = zlib.decompress(package, ZLIB_WBITS)
    new = io.BytesIO()
    detools.apply_patch(io.BytesIO(old), io.BytesIO(package), new)
    return new.getvalue()


def main(args) -> int:
    import hashlib
    import json
    import sys
    from pathlib import Path

    from sim.esp_image import validate_app_image

    def refuse(reason):
        if args.json:
            print(json.dumps({"ok": False, "reason": reason}))
        else:
            print("package delta: REFUSED %s" % reason, file=sys.stderr)
        return 1

    images = {}
    for what in ("old", "new"):
        path = getattr(args, what)
        try:
            images[what] = Path(path).read_bytes()
        except OSError as error:
            print("package delta: cannot read %s: %s" % (path, error.strerror or error), file=sys.stderr)
            return 2
    infos = {}
    for what, data in images.items():
        try:
            infos[what] = validate_app_image(data, chip=args.chip)
        except ValueError as error:
            return refuse("%s (%s) is not a valid %s app image: %s" % (what.upper(), getattr(args, what),
                                                                       args.chip, error))
    old, new = images["old"], images["new"]
    if len(new) > args.slot_size:
        return refuse("NEW: %d bytes do not fit the OTA slot of %d bytes" % (len(new), args.slot_size))
    if old == new:
        return refuse("OLD and NEW are the same image")
    try:
        package = make_patch(old, new, args.compression, args.esp_header)
    except ValueError as error:
        return refuse(str(error))
    if apply_package(old, package) != new:  # never ship a patch that does not give NEW
        return refuse("the patch does not reproduce NEW (a detools bug?)")
    Path(args.output).write_bytes(package)
    md5 = hashlib.md5(package).hexdigest()
    ratio = len(package) / len(new)
    result = {"ok": True, "file": args.output, "size": len(package), "md5": md5,
              "ratio": round(ratio, 4), "compression": args.compression, "esp_header": args.esp_header,
              "old_version": infos["old"]["version"], "new_version": infos["new"]["version"],
              "new_size": len(new)}
    if args.json:
        print(json.dumps(result))
        return 0
    print("ok: %s -> %s, %s patch%s written to %s" % (
        infos["old"]["version"], infos["new"]["version"], args.compression,
        " with esp_delta_ota header" if args.esp_header else "", args.output))
    print("    %d bytes, %.1f%% of the full image (%d bytes)" % (len(package), 100 * ratio, len(new)))
    print("upload it to OneNET as a differential package: source version %s, target version %s;"
          % (infos["old"]["version"], infos["new"]["version"]))
    print("the platform will show:")
    print("  size  %d" % len(package))
    print("  md5   %s" % md5)
    return 0
