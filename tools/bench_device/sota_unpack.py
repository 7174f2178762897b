# bench: sota.unpack of a staged bundle into app.new on a LittleFS over the fake vfs partition
# argv: a JSON file {"runs": [[name, bundle path, version], ...]}
import sys
import json
import time
import gc

from onenet_ota import sota
import _rig_lfs  # type: ignore[import]  # the test rig's LittleFS (sim/board), not firmware

with open(sys.argv[1]) as f:
    cfg = json.load(f)
buf = bytearray(4096)
_rig_lfs.mount(mkfs=True)

for name, path, version in cfg["runs"]:
    _rig_lfs.stage(sota, path, buf)
    sota.discard(False)  # nothing of an earlier unpack left to remove inside the timing
    gc.collect()
    t = time.ticks_us()
    v = sota.unpack(buf, version)
    us = time.ticks_diff(time.ticks_us(), t)
    assert v == version, v
    print("bench", name, us)
    sota.discard()
