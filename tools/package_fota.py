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

Signed firmware (a device with "trusted_keys" in its config refuses anything else):
--sign KEY.pem writes FILE.signed.bin (or --output), the image in ESP-IDF's Secure Boot V2
format as `espsecure sign-data --version 2` makes it (padded to 4 KiB, then a sector of RSA-3072
signature blocks, one per --sign, up to 3: sign with the old and the new key to rotate), checks
it with `espsecure verify-signature`, and prints the size and MD5 of the signed file, the one to
upload, and each key's digest for "trusted_keys". --keygen KEY.pem makes a new RSA-3072 key
(alone, or before signing with it); keep it off the devices and out of the repository.

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
    parser.add_argument("file", metavar="FILE.bin", nargs="?",
                        help="the app image (e.g. build-ESP32_GENERIC_OTA/micropython.bin)")
    parser.add_argument("--version",
                        help="the target version of the task; the image's app description must say the same "
                             "(required with FILE)")
    parser.add_argument("--chip", choices=sorted(CHIPS), default="esp32", metavar="CHIP",
                        help="the chip of the boards (default %(default)s; one of: %(choices)s)")
    parser.add_argument("--slot-size", type=lambda v: int(v, 0), default=SLOT_SIZE, metavar="BYTES",
                        help="size of the boards' OTA app slot (default %#x, MicroPython's 4 MiB OTA "
                             "partition table)" % SLOT_SIZE)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--sign", action="append", default=[], metavar="KEY.pem",
                        help="sign with this RSA-3072 key (Secure Boot V2); up to 3 times, for key rotation")
    parser.add_argument("--output", "-o", metavar="OUT.bin",
                        help="where the signed package goes (default FILE.signed.bin next to FILE)")
    parser.add_argument("--keygen", metavar="KEY.pem",
                        help="make a new RSA-3072 signing key in KEY.pem first (refused if it exists)")


def espsecure(*args: str) -> str:
    """Run esptool's espsecure CLI (the pinned esptool); its output, or ValueError with it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "espsecure", *args], capture_output=True, text=True)
    if done.returncode:
        raise ValueError((done.stdout + done.stderr).strip().splitlines()[-1:] or ["espsecure failed"])
    return done.stdout


def key_digest(key: str) -> str:
    """The SHA-256 digest of the key's public half as espsecure computes it for eFuse
    (digest-sbv2-public-key), in hex: what a device lists in "trusted_keys"."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "digest.bin"
        espsecure("digest-sbv2-public-key", "--keyfile", key, "--output", str(out))
        return out.read_bytes().hex()


def keygen(key: str) -> None:
    espsecure("generate-signing-key", "--version", "2", "--scheme", "rsa3072", key)


def sign(data_file: str, keys: list[str], output: str) -> bytes:
    """The signed package: FILE signed with every key, checked with espsecure against each."""
    from pathlib import Path

    espsecure("sign-data", "--version", "2", "--keyfile", *keys, "--output", output, data_file)
    for key in keys:
        espsecure("verify-signature", "--version", "2", "--keyfile", key, output)
    return Path(output).read_bytes()


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

    if args.keygen:
        if Path(args.keygen).exists():
            print("package fota: --keygen %s: the file exists; not overwritten" % args.keygen, file=sys.stderr)
            return 2
        try:
            keygen(args.keygen)
        except ValueError as error:
            print("package fota: --keygen %s: %s" % (args.keygen, error), file=sys.stderr)
            return 2
        if not args.json:
            print("key: %s, RSA-3072 (Secure Boot V2), digest %s" % (args.keygen, key_digest(args.keygen)))
        if not args.file:
            if args.json:
                print(json.dumps({"ok": True, "key": args.keygen, "key_digest": key_digest(args.keygen)}))
            return 0
    if not args.file or not args.version:
        print("package fota: FILE.bin and --version are needed (or --keygen KEY.pem alone)", file=sys.stderr)
        return 2
    if len(args.sign) > 3:
        print("package fota: --sign: at most 3 keys (a signature sector holds 3 blocks)", file=sys.stderr)
        return 2
    digests = []
    for key in args.sign:
        try:
            digests.append(key_digest(key))
        except ValueError as error:
            print("package fota: --sign %s: not a signing key: %s" % (key, error), file=sys.stderr)
            return 2
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
    image_size = len(data)
    signed = None
    if args.sign:
        if trailing:
            return refuse("%d bytes follow the end of the image (signed already?); sign the image alone"
                          % trailing)
        signed = args.output or str(Path(args.file).with_suffix(".signed.bin"))
        try:
            data = sign(args.file, args.sign, signed)
        except ValueError as error:
            return refuse("espsecure could not sign it: %s" % error)
        if len(data) > args.slot_size:
            return refuse("signed, %d bytes do not fit the OTA slot of %d bytes" % (len(data), args.slot_size))
    md5 = hashlib.md5(data).hexdigest()
    result = {"ok": True, "file": args.file, "size": len(data), "md5": md5, "version": info["version"],
              "chip": info["chip"], "chip_id": CHIPS[info["chip"]], "project": info["project"],
              "segments": info["segments"], "sha256_appended": info["hash_appended"],
              "image_size": info["size"], "trailing_bytes": trailing, "slot_size": args.slot_size}
    if signed:
        result.update(signed=signed, unsigned_size=image_size, key_digests=digests)
    if args.json:
        print(json.dumps(result))
        return 0
    print("ok: %s is an app image for %s, version %s (project %s), %d segments, checksum ok%s" % (
        name, info["chip"], info["version"], info["project"] or "?", info["segments"],
        ", SHA-256 ok" if info["hash_appended"] else ", no SHA-256 appended"))
    print("    fills %d%% of a %d KiB OTA slot" % (len(data) * 100 // args.slot_size, args.slot_size // 1024))
    if signed:
        print("signed: %s (Secure Boot V2, RSA-3072, %d signature block%s; espsecure verify-signature ok)"
              % (signed, len(digests), "" if len(digests) == 1 else "s"))
        for key, digest in zip(args.sign, digests):
            print("    key %s digest %s" % (key, digest))
        print('    devices that trust it have in ota_config.json: "trusted_keys": ["%s"]' % digests[0])
    elif trailing:
        print("    note: %d bytes follow the end of the image; they are downloaded and hashed too" % trailing)
    print("upload %s to OneNET as a firmware (FOTA) full package with target version %s;"
          % (Path(signed).name if signed else "it", args.version))
    print("the platform will show:")
    print("  size  %d" % len(data))
    print("  md5   %s" % md5)
    return 0
