# OneNET OTA client for MicroPython: firmware (FOTA) upgrades through China Mobile OneNET.
# Submodules are imported only by the code that needs them, so a boot that finds no task
# never pays for the download path.
import sys

__version__ = "0.1.0"


def load_config(path="ota_config.json"):
    """Read and check ota_config.json, then drop the checking code from the heap."""
    from onenet_ota import config

    try:
        return config.load(path)
    finally:
        del sys.modules["onenet_ota.config"]
        globals().pop("config", None)
