"""Memory of the firmware flow: the download loop allocates nothing, the whole cycle runs as
.mpy in a bounded heap, and the heap it needs does not grow with the package."""
import pytest

from tools import firmware

WATCH = '''
import gc
import onenet_ota
from onenet_ota import fota
samples = [0] * 64  # preallocated: appending would allocate as the list grows
count = [0]
_write = fota.Slot.write
def write(self, sector, buf):
    samples[count[0]] = gc.mem_alloc()
    count[0] += 1
    _write(self, sector, buf)
fota.Slot.write = write
gc.disable()  # every allocation shows in mem_alloc; none is hidden by a collection
try:
    print("ota: result", onenet_ota.run())
finally:
    gc.enable()
    samples = samples[:count[0]]
    steps = [b - a for a, b in zip(samples, samples[1:])]
    print("steps", steps)
'''


def test_download_loop_allocates_nothing(board, platform):
    """Between two sector writes of one Range fragment nothing is allocated; only the
    request of the next fragment (every 16 sectors) allocates."""
    board.install(reboot=False)
    (board.device.fs / "main.py").write_text(WATCH)
    board.add_task(board.image("1.1"), target="1.1")
    out = board.boot(heapsize="4m").output
    steps = eval(out.split("steps ", 1)[1].splitlines()[0])
    per_fragment = 65536 // 4096
    inner = [s for i, s in enumerate(steps, 1) if i % per_fragment]
    assert len(inner) > 30 and set(inner) == {0}, steps


@pytest.fixture
def mpy_board(board, compiled):
    """The board running firmware/ and the fakes as .mpy, as a board gets them."""
    board.extra_path = [compiled]
    return board


def cycle_completes(board, heapsize):
    first = board.boot(heapsize=heapsize, extra_path=board.extra_path)
    second = board.boot(heapsize=heapsize, extra_path=board.extra_path)
    return "ota: result 201" in second.output, first.output + second.output


# The floor measured by `python -m tools bench` is below this; the aim (48 KiB on
# this 64-bit host) is not reached yet: see README, Memory and speed.
HEAP_BUDGET = "88k"


def test_full_cycle_as_mpy_fits_the_budget(mpy_board, platform):
    task = mpy_board.add_task(mpy_board.image("1.1", 1024 * 1024), target="1.1")
    ok, out = cycle_completes(mpy_board, HEAP_BUDGET)
    assert ok, out
    assert task.state == "completed"
