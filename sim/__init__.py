"""The simulated board (CPython side): a fake ESP32 that the tools and the tests both run.

    sim.micropython   the unix port of MicroPython with firmware/ and sim/board/ on its path
    sim.device        the board: its flash, ESP-IDF's bootloader with app rollback, its power
    sim.esp_image     ESP app images: build them, and check them as the bootloader does
    sim/board/        what runs inside micropython in place of the chip's C modules: esp32,
                      machine, network, the boot runner _board (boot.py then main.py)

sim imports nothing from tools/: the tools (demo, bench, campaign, packaging) and the tests
import the board from here, never the other way round.
"""
