# ota_config.json: what a device needs to talk to the platform. Every field is checked once,
# here, so a typo stops the cycle with a message naming the field instead of failing later in
# the middle of a download. The access key is never part of any message.
# onenet_ota.load_config() unloads this module afterwards: the checks never cost heap again.
import json

PATH = "ota_config.json"

# name, type, default (None: required)
_FIELDS = (
    ("host", str, "ota.heclouds.com"),
    ("port", int, 0),  # 0: 443, or 80 with "https": false
    ("https", bool, True),  # false: plain HTTP, readable and forgeable on the way (README)
    ("ca_file", str, ""),  # PEM or DER CA file, required with https: verifies the server
    ("product_id", str, None),
    ("access_key", str, None),
    ("device_id", str, ""),  # or unique_id, to look the id up on the platform
    ("unique_id", str, ""),
    ("manuf", int, 101),  # ESP32 in OneNET's table
    ("model", int, 10101),
    ("version", str, ""),  # "": the running firmware's app description
    ("check_interval", int, 3600),  # seconds between cycles, for the application's scheduler
    ("chunk_size", int, 4096),  # bytes per flash write: whole sectors
    # bytes per Range request: each costs a round trip and a journal save (measured: 64 KiB
    # fragments ran at 0.80 of a raw socket on loopback, one request at 0.98)
    ("fragment_size", int, 262144),
    ("progress_step", int, 10),  # percent between progress reports
    ("reboot", bool, True),  # reset into the new firmware as soon as it is switched to
    ("timeout", int, 10),  # seconds: connect and every read
    ("auth_method", str, "sha256"),
    ("auth_lifetime", int, 3600),  # seconds an Authorization header lives
    ("cdn", bool, True),  # the device resolves host names (the platform may send one)
    ("wifi_ssid", str, ""),
    ("wifi_password", str, ""),
    # hex SHA-256 digests of the public keys firmware must be signed with (0-3; espsecure
    # digest-sbv2-public-key, printed by `package fota --sign`): none, no signature check
    ("trusted_keys", list, []),
    # take a task whose target is not newer than the running version (check.py's rule)
    ("allow_downgrade", bool, False),
)


class ConfigError(ValueError):
    pass


class Config:
    """The settings as attributes; filled and checked by load()."""

    host: str
    port: int
    https: bool
    ca_file: str
    product_id: str
    access_key: str
    device_id: str
    unique_id: str
    manuf: int
    model: int
    version: str
    check_interval: int
    chunk_size: int
    fragment_size: int
    progress_step: int
    reboot: bool
    timeout: int
    auth_method: str
    auth_lifetime: int
    cdn: bool
    wifi_ssid: str
    wifi_password: str
    trusted_keys: list
    allow_downgrade: bool


def load(path=PATH):
    try:
        with open(path) as f:
            values = json.load(f)
    except OSError:
        raise ConfigError("%s: cannot be read" % path)
    except ValueError:
        raise ConfigError("%s: is not valid JSON" % path)
    if type(values) is not dict:
        raise ConfigError("%s: must hold a JSON object" % path)
    return from_dict(values, path)


def from_dict(values, path=PATH):
    def bad(name, why):
        raise ConfigError("%s: field %r %s" % (path, name, why))

    cfg = Config()
    names = []
    for name, kind, default in _FIELDS:
        names.append(name)
        value = values.get(name, default)
        if value is None:
            bad(name, "is missing")
        if type(value) is not kind:
            bad(name, "must be " + kind.__name__)
        setattr(cfg, name, value)
    for name in values:
        if name not in names:
            bad(name, "is unknown")
    if not cfg.product_id:
        bad("product_id", "is empty")
    if not cfg.access_key:
        bad("access_key", "is empty")
    if not (cfg.device_id or cfg.unique_id):
        bad("device_id", "is empty and there is no unique_id to look it up with")
    if cfg.device_id and not cfg.device_id.isdigit():
        bad("device_id", "must be the numeric OneNET device id")
    if not 0 <= cfg.port <= 65535:
        bad("port", "is not a TCP port")
    if not cfg.port:
        cfg.port = 443 if cfg.https else 80
    if cfg.ca_file and not cfg.https:
        bad("ca_file", "is set but https is false")
    if cfg.https and not cfg.ca_file:
        bad("ca_file", "is missing: https (the default) needs the platform's CA certificate")
    if cfg.chunk_size <= 0 or cfg.chunk_size % 4096:
        bad("chunk_size", "must be a positive multiple of 4096 (the flash sector)")
    if cfg.fragment_size < cfg.chunk_size or cfg.fragment_size % cfg.chunk_size:
        bad("fragment_size", "must be a multiple of chunk_size")
    if not 1 <= cfg.progress_step <= 100:
        bad("progress_step", "must be 1..100 (percent)")
    if cfg.timeout <= 0 or cfg.check_interval <= 0:
        bad("timeout" if cfg.timeout <= 0 else "check_interval", "must be positive")
    if cfg.auth_method not in ("md5", "sha1", "sha256"):
        bad("auth_method", "must be md5, sha1 or sha256")
    if cfg.auth_lifetime < 600:
        bad("auth_lifetime", "must be at least 600 seconds (headers renew 300 s early)")
    for name in ("product_id", "unique_id", "host"):
        for b in getattr(cfg, name).encode():
            if b in b" /?&#%\r\n\t":
                bad(name, "has a character that cannot go in a URL")
    if len(cfg.trusted_keys) > 3:
        bad("trusted_keys", "holds more than 3 digests (a signature sector has 3 blocks)")
    for key in cfg.trusted_keys:
        if type(key) is not str or len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
            bad("trusted_keys", "must hold SHA-256 digests, each 64 hex digits")
    cfg.trusted_keys = [key.lower() for key in cfg.trusted_keys]
    return cfg
