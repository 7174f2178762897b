# Freeze the OneNET OTA client into a custom MicroPython firmware build: frozen bytecode costs
# no RAM to load and no filesystem space. From your board's manifest (e.g. a copy of
# ports/esp32/boards/manifest.py):
#
#     include("/path/to/this/repo/manifest.py")
#
# then build as usual (make BOARD=ESP32_GENERIC ... FROZEN_MANIFEST=...). boot.py, main.py and
# ota_config.json stay on the board's filesystem (python -m tools deploy puts them there).
# A frozen package shadows a copy in /lib (".frozen" comes first on sys.path): after freezing,
# upgrade the client with the firmware (FOTA), not by copying files.
metadata(
    description="OneNET OTA client: firmware upgrades for ESP32 through China Mobile OneNET",
    version="0.1.0",
)

package("onenet_ota", base_path="firmware")
