# ota_config.json: what a device needs to talk to the platform. Every field is checked once,
# here, so a typo stops the cycle with a message naming the field instead of failing later
# in the middle of a download. The access key is never part of any message.
import json

PATH = "ota_config.json"

# name -> (type, default); a default of None means the field is required
_FIELDS = {
    "host": (str, "ota.heclouds.com"),
    "port": (int, 0),  # 0: 80, or 443 with https
    "https": (bool, False),
    "ca_file": (str, ""),  # PEM or DER CA; with https, the server certificate is verified
    "product_id": (str, None),
    "access_key": (str, None),
    "device_id": (str, ""),  # or unique_id, to look the id up on the platform
    "unique_id": (str, ""),
    "manuf": (int, 101),  # ESP32 in OneNET's table
    "model": (int, 10101),
    "version": (str, ""),  # "": read from the running firmware's app description
    "check_interval": (int, 3600),
    "chunk_size": (int, 4096),
    "fragment_size": (int, 65536),  # bytes per Range request
    "progress_step": (int, 10),
    "reboot": (bool, True),
    "timeout": (int, 10),  # seconds, connect and every read
    "auth_method": (str, "sha256"),
    "auth_lifetime": (int, 3600),  # seconds an Authorization header is valid for
    "cdn": (bool, True),
    "wifi_ssid": (str, ""),
    "wifi_password": (str, ""),
}


class ConfigError(ValueError):
    pass


class Config:
    def __init__(self, values):
        for name, (kind, default) in _FIELDS.items():
            value = values.get(name, default)
            if value is None:
                raise ConfigError("%s: field %r is missing" % (PATH, name))
            if type(value) is not kind:
                raise ConfigError("%s: field %r must be %s" % (PATH, name, kind.__name__))
            setattr(self, name, value)
        unknown = [name for name in values if name not in _FIELDS]
        if unknown:
            raise ConfigError("%s: unknown field %r" % (PATH, unknown[0]))
        self._check()

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
