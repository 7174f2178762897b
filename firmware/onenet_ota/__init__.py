# OneNET OTA client for MicroPython: firmware (FOTA) and application (SOTA) upgrades through
# China Mobile OneNET. This module holds only the entry points; the cycle (cycle.py) and its
# phases are imported when they are needed, so a boot that finds no task never pays for the
# download path.
__version__ = "0.1.0"


def run(battery=None, signal=None, progress=None, path="ota_config.json"):
    """One OTA cycle as main.py runs it: config, network, cycle.Cycle.run(). battery() and
    signal() return the levels the task's `power` and `signal` thresholds are compared with;
    progress(percent) sees the download advance; all are optional. Returns what run()
    returns: None (nothing to do), the report code of the task it ended (0: the platform
    ended it), or cycle.SWITCHING."""
    # The sector buffer first, before imports and JSON fragment the heap: later, 4 KiB in
    # one piece may no longer be found even with far more free in total (TOOLCHAIN.md).
    buf = bytearray(4096)
    # The code of the cycle next, while the heap is still in one piece: its names make the
    # qstr pool double, a block of ~3.5 KiB that a fragmented heap cannot give (measured).
    from onenet_ota.cycle import Cycle
    import onenet_ota.check  # noqa: F401  # dropped again before a download

    cfg = load_config(path)
    if cfg.chunk_size != len(buf):
        buf = None  # a configured chunk size: the cycle allocates it
    connect(cfg)

    return Cycle(cfg, battery, signal, progress, buf).run()


def load_config(path="ota_config.json"):
    """Read and check ota_config.json, then drop the checking code from the heap."""
    from onenet_ota import config
    from onenet_ota.codes import drop

    try:
        return config.load(path)
    finally:
        del config
        drop("config")


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
