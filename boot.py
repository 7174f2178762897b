# boot.py runs before anything else on every boot. It is kept to what cannot fail: the OTA
# client, the network and the application all start from main.py, where an error is reported
# instead of stopping the board from booting.
import gc

gc.collect()
