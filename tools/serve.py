"""``python -m tools serve``: the mock OneNET platform standalone, for a board on the LAN.

Builds one device and (unless --no-task) one upgrade task from the flags, prints what the
board's configuration needs (host, port, product id, access key, device id, manuf/model),
then serves until Ctrl-C (or SIGTERM), printing one line per request and per task state
change. Without --package the task serves a generated package of --size bytes.

Exit status: 0 stopped by Ctrl-C or SIGTERM, 1 could not serve (e.g. the port is taken, a
certificate or the package cannot be read), 2 usage (e.g. a malformed --fault).
"""
import argparse

FAULT_HELP = """\
faults (--fault NAME[=ARGS], repeatable; OFF = offset in the package file;
ENDPOINT = version_report, version_query, check, token_check, download, progress,
report, tasking, dev_info, or api (all but download) or any):
  drop=OFF[,OFF...]                 close the download connection when the bytes served
                                    reach each offset (each offset once)
  stall=[ENDPOINT:]SECONDS          wait before the next response head (default download), once
  stall-body=OFF:SECONDS            wait in the download body at OFF, once
  http-error=[ENDPOINT][:STATUS[:COUNT]]  answer HTTP STATUS (503) to the next COUNT (1)
                                    requests to ENDPOINT (download)
  errno=ENDPOINT:ERRNO[:COUNT]      answer errno ERRNO (e.g. 7) to the next COUNT (1) calls
  ignore-range                      answer every download 200 with the whole file
  corrupt=OFF[,OFF...]              flip the byte at each offset in everything served
  wrong-md5                         advertise a wrong MD5 in the task data
  wrong-size[=DELTA]                advertise size + DELTA (1)
  expire-token                      expire the task's token right away (errno 12)
  cancel-at=OFF                     cancel the task when the download reaches OFF, once
  bad-json=ENDPOINT[:COUNT]         answer malformed JSON to the next COUNT (1) calls
  endless-header=ENDPOINT[:COUNT]   answer a header line that never ends (bounded, 1 MiB)
  chunked                           send API JSON with Transfer-Encoding: chunked
  redirect=absolute|relative        answer downloads 302 to /mock/file/{token}

example: python -m tools serve --package app.bin --target 1.1 --ip-port auto \\
             --fault drop=65536,300000 --fault http-error=download:503:2
"""


def configure(parser: argparse.ArgumentParser):
    from tools.mockplatform.core import DEFAULT_ACCESS_KEY, DEFAULT_PRODUCT_ID

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.epilog = FAULT_HELP
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all, for a board on the LAN)")
    net.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    net.add_argument("--certfile", help="serve HTTPS with this certificate chain (PEM)")
    net.add_argument("--keyfile", help="private key of --certfile (PEM), if not inside it")
    net.add_argument("--quiet", action="store_true", help="do not print a line per request")

    dev = parser.add_argument_group("product and device")
    dev.add_argument("--product-id", default=DEFAULT_PRODUCT_ID, help="product id (default %(default)s)")
    dev.add_argument("--access-key", default=DEFAULT_ACCESS_KEY, help="product access key, base64")
    dev.add_argument("--device-id", default="1000001", help="numeric dev_id (default %(default)s)")
    dev.add_argument("--unique-id", default="esp32-0001", help="authInfo for endpoint 9 (default %(default)s)")
    dev.add_argument("--device-name", help="device name for a device-level key (default: the dev_id)")
    dev.add_argument("--device-key", help="also accept signatures by this device key (base64)")
    dev.add_argument("--manuf", default="101", help="manufacturer code (ESP32: 101)")
    dev.add_argument("--model", default="10101", help="model code (ESP32: 10101)")
    dev.add_argument("--f-version", default="1.0", help="firmware version the platform records")
    dev.add_argument("--s-version", default="1.0", help="application version the platform records")

    task = parser.add_argument_group("task")
    task.add_argument("--no-task", action="store_true", help="only the device, no upgrade task")
    task.add_argument("--package", help="package file to serve (default: generated, --size bytes)")
    task.add_argument("--size", type=int, default=256 * 1024, help="size of the generated package")
    task.add_argument("--target", default="1.1", help="target version (default %(default)s)")
    task.add_argument("--sota", action="store_true", help="an application (SOTA, type 2) task, not firmware")
    task.add_argument("--delta", action="store_true", help="a differential package (data type 2)")
    task.add_argument("--signal", type=int, default=0, help="proceed only above this signal")
    task.add_argument("--power", type=int, default=0, help="proceed only above this battery level")
    task.add_argument("--retry", type=int, default=3, help="retries the device may make")
    task.add_argument("--interval", type=int, default=10, help="seconds between retries")
    task.add_argument("--ip-port", help="ipPort in the task data: absent by default, 'auto' = "
                      "this server as the board reached it, or any host:port (e.g. nginx)")
    task.add_argument("--token-lifetime", type=float, default=48 * 3600, help="seconds (default 48 h)")
    task.add_argument("--fault", action="append", default=[], metavar="NAME[=ARGS]",
                      help="switch a fault on (repeatable; list below)")


def _lan_address():
    """The address this machine uses towards the LAN (no packet is sent)."""
    import socket
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _generated_package(size):
    """Deterministic bytes that do not compress to nothing, so corruption would show."""
    import hashlib
    out = bytearray()
    block = b"onenet-ota-mock"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def main(args) -> int:
    import signal
    import ssl
    import sys
    import threading

    from tools.mockplatform import FOTA, SOTA, MockPlatform

    def say(line):
        print(line, flush=True)

    # before anything is printed: a SIGTERM right after the first lines must still stop cleanly
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    try:  # a certificate or a package that cannot be read
        context = None
        if args.certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.certfile, args.keyfile)
        platform = MockPlatform(args.product_id, args.access_key, host=args.host, port=args.port,
                                ssl_context=context, token_lifetime=args.token_lifetime,
                                log=None if args.quiet else say)
        device = platform.add_device(args.device_id, unique_id=args.unique_id, manuf=args.manuf,
                                     model=args.model, f_version=args.f_version,
                                     s_version=args.s_version, name=args.device_name, key=args.device_key)
        if not args.no_task:
            from pathlib import Path
            package = Path(args.package) if args.package else _generated_package(args.size)
            platform.add_task(device.dev_id, package, args.target, ota_type=SOTA if args.sota else FOTA,
                              package_type=2 if args.delta else 1, retry=args.retry,
                              interval=args.interval, signal=args.signal, power=args.power,
                              ip_port=args.ip_port)
    except OSError as error:
        print("serve: %s" % error, file=sys.stderr)
        return 1
    try:
        for fault in args.fault:
            name, _, arg = fault.partition("=")
            platform.set_fault(name, arg or None)
    except ValueError as error:
        print("serve: --fault %s: %s" % (fault, error), file=sys.stderr)
        return 2
    try:
        platform.start()
    except OSError as error:  # e.g. the port is taken
        print("serve: %s" % error, file=sys.stderr)
        return 1
    host = _lan_address() if args.host in ("0.0.0.0", "") else platform.host
    say("mock OneNET platform listening on %s (%s)" % (platform.url, "TLS" if context else "plain HTTP"))
    say("device configuration: host=%s port=%d https=%s product_id=%s access_key=%s dev_id=%s "
        "unique_id=%s manuf=%s model=%s" % (host, platform.port, "true" if context else "false", platform.product_id,
                                           platform.access_key, device.dev_id, device.unique_id,
                                           device.manuf, device.model))
    if args.fault:
        say("faults: %s" % ", ".join(args.fault))
    say("Ctrl-C to stop")

    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    platform.stop()
    for task in platform.tasks:
        say("task %d: %s; history %s; reports %s" % (task.id, task.state, " -> ".join(task.history), task.reports))
    return 0
