"""``python -m tools token``: an Authorization header for OneNET, to try the real platform by hand.

Prints the header value alone on stdout (so `AUTH=$(python -m tools token ...)` works in a
script), and on stderr when it expires and an example curl command. The signature is
OneNET's: base64(HMAC-<method>(base64decode(access key), et \\n method \\n res \\n version)),
with every value URL-encoded.

The access key may come from $ONENET_ACCESS_KEY instead of --access-key, to keep it out of
the shell history.

Exit status: 0 printed, 2 usage error (missing or malformed argument, e.g. a key that is not
base64).
"""
import argparse

DEFAULT_HOST = "ota.heclouds.com"


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("--product-id", required=True, help="the product id (OneNET console: product details)")
    parser.add_argument("--access-key", help="the product's access key (base64), or the device key with "
                        "--device-name; default: $ONENET_ACCESS_KEY")
    parser.add_argument("--method", choices=("md5", "sha1", "sha256"), default="sha256",
                        help="signature method (default %(default)s)")
    parser.add_argument("--lifetime", type=int, default=3600, metavar="SECONDS",
                        help="seconds from now until the header expires (default %(default)s)")
    parser.add_argument("--res", help="the resource signed for (default products/<product id>)")
    parser.add_argument("--device-name", help="sign as this device with its device key: "
                        "res = products/<product id>/devices/<name>")
    parser.add_argument("--dev-id", help="a device id for the example curl line (version query); without it "
                        "the example looks a device id up (devInfo)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="host[:port] for the example curl line (default %(default)s; the mock "
                             "platform of `python -m tools serve`, e.g. 192.168.1.10:8080)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print the header value only")


def main(args) -> int:
    import binascii
    import base64
    import os
    import sys
    import time
    from urllib.parse import quote

    from tools import onenet_auth

    def usage(message):
        print("token: %s" % message, file=sys.stderr)
        return 2

    key = args.access_key or os.environ.get("ONENET_ACCESS_KEY")
    if not key:
        return usage("an access key is needed: --access-key KEY or $ONENET_ACCESS_KEY")
    try:
        base64.b64decode(key, validate=True)
    except binascii.Error:
        return usage("the access key is not base64 (copy it from the OneNET console as it is)")
    if args.lifetime <= 0:
        return usage("--lifetime must be positive (seconds)")
    if args.res and args.device_name:
        return usage("--res and --device-name both set the resource: give one")
    res = args.res or (onenet_auth.device_res(args.product_id, args.device_name) if args.device_name
                       else onenet_auth.product_res(args.product_id))
    et = int(time.time()) + args.lifetime
    header = onenet_auth.make(args.product_id, key, et, method=args.method, res=res)
    print(header)
    sys.stdout.flush()
    if not args.quiet:
        if args.dev_id:
            url = "http://%s/ota/device/version?dev_id=%s" % (args.host, quote(args.dev_id, safe=""))
            what = "the firmware version the platform has for device %s" % args.dev_id
        else:
            url = "http://%s/ota/devInfo?pid=%s&authInfo=UNIQUE_ID" % (args.host, quote(args.product_id, safe=""))
            what = "the device id of the device registered with UNIQUE_ID"
        print("# res %s, method %s, valid until %s (et=%d)" % (
            res, args.method, time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(et)), et), file=sys.stderr)
        print("# try it (%s):" % what, file=sys.stderr)
        print("curl -s -H 'Authorization: %s' '%s'" % (header, url), file=sys.stderr)
    return 0
