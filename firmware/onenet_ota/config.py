# ota_config.json: what a device needs to talk to the platform. Every field is checked once,
# here, so a typo stops the cycle with a message naming the field instead of failing later
# in the middle of a download. The access key is never part of any message.
import json

PATH = "ota_config.json"

class ConfigError(ValueError):
    pass


class Config:
    def __init__(self, values):
        self._values = values
        self._seen = []
        self.host = self._get("host", str, "ota.heclouds.com")
        self.port = self._get("port", int, 0)  # 0: 80, or 443 with https
        self.https = self._get("https", bool, False)
        self.ca_file = self._get("ca_file", str, "")  # PEM or DER; verifies the server
        self.product_id = self._get("product_id", str)
        self.access_key = self._get("access_key", str)
        self.device_id = self._get("device_id", str, "")  # or unique_id, to look it up
        self.unique_id = self._get("unique_id", str, "")
        self.manuf = self._get("manuf", int, 101)  # ESP32 in OneNET's table
        self.model = self._get("model", int, 10101)
        self.version = self._get("version", str, "")  # "": the running app description's
        self.check_interval = self._get("check_interval", int, 3600)
        self.chunk_size = self._get("chunk_size", int, 4096)
        self.fragment_size = self._get("fragment_size", int, 65536)  # bytes per Range request
        self.progress_step = self._get("progress_step", int, 10)
        self.reboot = self._get("reboot", bool, True)
        self.timeout = self._get("timeout", int, 10)  # seconds: connect and every read
        self.auth_method = self._get("auth_method", str, "sha256")
        self.auth_lifetime = self._get("auth_lifetime", int, 3600)
        self.cdn = self._get("cdn", bool, True)
        self.wifi_ssid = self._get("wifi_ssid", str, "")
        self.wifi_password = self._get("wifi_password", str, "")
        for name in values:
            if name not in self._seen:
                raise ConfigError("%s: unknown field %r" % (PATH, name))
        del self._values, self._seen
        self._check()

    def _get(self, name, kind, default=None):
        self._seen.append(name)
        value = self._values.get(name, default)
        if value is None:
            raise ConfigError("%s: field %r is missing" % (PATH, name))
        if type(value) is not kind:
            raise ConfigError("%s: field %r must be %s" % (PATH, name, kind.__name__))
        return value

    def _check(self):
        def bad(name, why):
            raise ConfigError("%s: field %r %s" % (PATH, name, why))

        if not self.product_id:
            bad("product_id", "is empty")
        if not self.access_key:
            bad("access_key", "is empty")
        if not (self.device_id or self.unique_id):
            bad("device_id", "is empty and there is no unique_id to look it up with")
        if not 0 <= self.port <= 65535:
            bad("port", "is not a TCP port")
        if not self.port:
            self.port = 443 if self.https else 80
        if self.ca_file and not self.https:
            bad("ca_file", "is set but https is false")
        if self.chunk_size <= 0 or self.chunk_size % 4096:
            bad("chunk_size", "must be a positive multiple of 4096 (the flash sector)")
        if self.fragment_size < self.chunk_size or self.fragment_size % self.chunk_size:
            bad("fragment_size", "must be a multiple of chunk_size")
        if not 1 <= self.progress_step <= 100:
            bad("progress_step", "must be 1..100 (percent)")
        if self.timeout <= 0:
            bad("timeout", "must be positive")
        if self.check_interval <= 0:
            bad("check_interval", "must be positive")
        if self.auth_method not in ("md5", "sha1", "sha256"):
            bad("auth_method", "must be md5, sha1 or sha256")
        if self.auth_lifetime < 600:
            bad("auth_lifetime", "must be at least 600 seconds (headers renew 300 s early)")

    def __repr__(self):
        return "<Config %s:%d product %s device %s>" % (
            self.host, self.port, self.product_id, self.device_id or self.unique_id)


def load(path=PATH):
    try:
        with open(path) as f:
            values = json.load(f)
    except OSError:
        raise ConfigError("%s: cannot be read" % path)
    except ValueError:
        raise ConfigError("%s: is not valid JSON" % path)
    if not isinstance(values, dict):
        raise ConfigError("%s: must hold a JSON object" % path)
    return Config(values)
