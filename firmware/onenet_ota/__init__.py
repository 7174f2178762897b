# OneNET OTA client for MicroPython: firmware (FOTA) and application (SOTA) upgrades.
# Submodules are imported only by the code that needs them, so a boot that finds no task
# never pays for the download path.
__version__ = "0.1.0"
