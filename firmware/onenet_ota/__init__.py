# OneNET OTA client for MicroPython: firmware (FOTA) upgrades through China Mobile OneNET.
# Submodules are imported only by the code that needs them, so a boot that finds no task
# never pays for the download path.
import sys

__version__ = "0.1.0"


def run(battery=None, signal=None, progress=None, path="ota_config.json"):
    """One OTA cycle as main.py runs it: config, network, Updater.cycle(). The callbacks
    are those of updater.Updater. Returns what cycle() returns."""
    # The sector buffer first, before imports and JSON fragment the heap: later, 4 KiB in
    # one piece may no longer be found even with far more free in total (TOOLCHAIN.md).
    buf = bytearray(4096)
    # The code of the cycle next, while the heap is still in one piece: its names make the
    # qstr pool double, a block of ~3.5 KiB that a fragmented heap cannot give (measured).
    from onenet_ota.updater import Updater
    import onenet_ota.check  # noqa: F401  # dropped again before a download

    cfg = load_config(path)
    if cfg.chunk_size != len(buf):
        buf = None  # a configured chunk size: the updater allocates it
    connect(cfg)

    return Updater(cfg, battery, signal, progress, buf).cycle()


def log(*args):
    """What the client tells the console: one line, "ota: ..." (never the access key)."""
    print("ota:", *args)


def load_config(path="ota_config.json"):
    """Read and check ota_config.json, then drop the checking code from the heap."""
    from onenet_ota import config

    try:
        return config.load(path)
    finally:
        del config
        drop("config")


def drop(name):
    """Forget the submodule `name`: once nothing else refers to its functions or classes,
    the next collection gives its code back to the heap."""
    sys.modules.pop("onenet_ota." + name, None)
    globals().pop(name, None)  # the attribute the import set on this package


def connect(cfg):
    """Join the configured Wi-Fi network; without wifi_ssid the device is taken to be online
    already (Ethernet, a cellular modem, the unix port)."""
    if not cfg.wifi_ssid:
        return
    import network
    import time

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(cfg.wifi_ssid, cfg.wifi_password)
        deadline = time.ticks_add(time.ticks_ms(), cfg.timeout * 1000)
        while not wlan.isconnected():
            if time.ticks_diff(deadline, time.ticks_ms()) < 0:
                raise OSError("Wi-Fi %r: no connection after %d s" % (cfg.wifi_ssid, cfg.timeout))
            time.sleep_ms(100)
