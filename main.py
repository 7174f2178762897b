# main.py: bring up the network, run one OTA cycle, then start the application.
# An OTA failure is printed and the application still starts: a device that cannot update
# must keep doing its job. A pending new firmware is confirmed inside the cycle, once it has
# reached the platform; if it never gets there, the next reset rolls it back.
import sys


def connect(cfg):
    if not cfg.wifi_ssid:
        return  # already online (Ethernet, a cellular modem, or the unix port)
    import network
    import time

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(cfg.wifi_ssid, cfg.wifi_password)
        deadline = time.ticks_add(time.ticks_ms(), cfg.timeout * 1000)
        while not wlan.isconnected():
            if time.ticks_diff(deadline, time.ticks_ms()) < 0:
                raise OSError("Wi-Fi %r: not connected after %d s" % (cfg.wifi_ssid, cfg.timeout))
            time.sleep_ms(100)


def ota():
    from onenet_ota import load_config, updater

    cfg = load_config()
    connect(cfg)
    return updater.Updater(cfg).cycle()


try:
    print("ota: result", ota())
except Exception as e:  # noqa: BLE001 - whatever happened, the application must start
    sys.print_exception(e)  # type: ignore[attr-defined]
