# Fake `network` for the unix port: WLAN as on the ESP32 port, always reachable through
# the host's own network. $FAKE_ESP32_RSSI sets the signal (default -55);
# $FAKE_ESP32_WIFI=down makes connect() fail with STAT_NO_AP_FOUND.
import os
from micropython import const

STA_IF = const(0)
AP_IF = const(1)
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_BEACON_TIMEOUT = const(200)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_ASSOC_FAIL = const(203)
STAT_CONNECT_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)

_UP = ("10.0.0.2", "255.255.255.0", "10.0.0.1", "10.0.0.1")
_DOWN = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
_state = {}  # interface -> dict; WLAN objects of one interface share it, as on the chip


class WLAN:
    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        if interface_id not in _state:
            _state[interface_id] = {"active": False, "status": STAT_IDLE, "cfg": {}}
        self._s = _state[interface_id]

    def active(self, is_active=None):
        if is_active is None:
            return self._s["active"]
        self._s["active"] = bool(is_active)
        if not is_active:
            self._s["status"] = STAT_IDLE

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._s["active"]:
            raise OSError("Wifi Not Started")
        if ssid is not None:
            self._s["cfg"]["ssid"] = ssid
        self._s["status"] = STAT_NO_AP_FOUND if os.getenv("FAKE_ESP32_WIFI") == "down" else STAT_GOT_IP

    def disconnect(self):
        self._s["status"] = STAT_IDLE

    def isconnected(self):
        if self._if == AP_IF:
            return False
        return self._s["status"] == STAT_GOT_IP

    def status(self, param=None):
        if param is None:
            return self._s["status"]
        if param == "rssi":
            return int(os.getenv("FAKE_ESP32_RSSI") or -55)
        if param == "stations":
            return []
        raise ValueError("unknown status param")

    def ifconfig(self, config=None):
        if config is None:
            return _UP if self.isconnected() else _DOWN
        self._s["cfg"]["ifconfig"] = config

    def scan(self):
        return []

    def config(self, *args, **kwargs):
        if kwargs:
            self._s["cfg"].update(kwargs)
            return
        key = args[0]
        if key == "mac":
            import machine
            mac = bytearray(machine.unique_id()[:6])
            mac[5] = (mac[5] + self._if) & 0xFF  # the AP MAC is the base MAC + 1
            return bytes(mac)
        return self._s["cfg"].get(key, "" if key in ("ssid", "key", "hostname") else 0)
