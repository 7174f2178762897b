"""`python -m tools deploy` against the unix micropython on a pty, driven by mpremote as a board
over USB serial is: the package lands in lib/, imports on the "board", and every refusal comes
before a byte is copied, with a message that says what to do."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from ptyboard import PtyBoard
from sim import micropython

CONFIG = {"host": "192.168.1.10", "port": 8080, "https": False, "product_id": "123456",
          "access_key": "bW9jay1vbmVuZXQtYWNjZXNzLWtleS0wMDAwMDAwMDA=", "device_id": "20001"}
MODULES = sorted(p.stem for p in (REPO / "firmware" / "onenet_ota").glob("*.py"))
ARCH = micropython.host()["arch"]  # the "board" is the unix micropython: x64 for the PyPI one


def deploy(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tools", "deploy", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def board(tmp_path):
    b = PtyBoard(tmp_path / "board")
    yield b
    b.close()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "ota_config.json"
    path.write_text(json.dumps(CONFIG))
    return path


def imports_on_host(fs):
    """A fresh micropython in the board's directory, with the board's path: where does the
    package come from?"""
    return micropython.run(["-c", "import onenet_ota; print(onenet_ota.__file__, onenet_ota.__version__)"],
                           path=":.frozen:lib", cwd=fs)


def test_deploy_compiled_leaves_an_importable_package(board, config):
    result = deploy("--port", board.port, "--config", str(config), "--arch", ARCH)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "import onenet_ota: ok" in result.stdout
    assert "lib/onenet_ota/__init__.mpy" in result.stdout
    assert board.alive, "the deploy ended the board's MicroPython (a soft reset?)"
    lib = board.fs / "lib" / "onenet_ota"
    assert sorted(p.stem for p in lib.iterdir()) == MODULES
    assert all(p.suffix == ".mpy" for p in lib.iterdir())
    assert (board.fs / "boot.py").read_bytes() == (REPO / "boot.py").read_bytes()
    assert (board.fs / "main.py").read_bytes() == (REPO / "main.py").read_bytes()
    assert json.loads((board.fs / "ota_config.json").read_text()) == CONFIG
    assert not list(board.fs.rglob("*.new")), "side files left behind"
    # the import really happens, from the board's lib/ and not from firmware/
    run = imports_on_host(board.fs)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("lib/onenet_ota/__init__.mpy")
    # and the board still answers: the package is importable there too
    assert "lib/onenet_ota" in board.exec("import onenet_ota; print(onenet_ota.__file__)")


def test_source_then_compiled_replaces_the_sources(board):
    """Arch from the board itself; a later compiled deploy removes the .py that would shadow
    the new .mpy."""
    first = deploy("--port", board.port, "--source")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "lib/onenet_ota/__init__.py" in first.stdout
    assert "no ota_config.json" in first.stdout  # the board has none and none was given
    second = deploy("--port", board.port)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "compiled to .mpy for %s" % ARCH in second.stdout
    assert "removed %d file(s)" % len(MODULES) in second.stdout
    assert sorted(p.name for p in (board.fs / "lib" / "onenet_ota").iterdir()) == [m + ".mpy" for m in MODULES]
    assert imports_on_host(board.fs).stdout.startswith("lib/onenet_ota/__init__.mpy")


def test_deploy_to_a_littlefs_board(board, config):
    """A real LittleFS (in RAM) as on an ESP32: block accounting, rename over files, /lib."""
    board.mount_ram_fs(600)  # 300 KiB
    result = deploy("--port", board.port, "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from lib/onenet_ota/__init__.mpy" in result.stdout
    listing = board.exec("import os; print(sorted(os.listdir()), sorted(os.listdir('lib/onenet_ota')))")
    assert "'boot.py', 'lib', 'main.py', 'ota_config.json'" in listing
    again = deploy("--port", board.port, "--config", str(config))  # over the files already there
    assert again.returncode == 0, again.stdout + again.stderr


def test_no_space_is_refused_before_copying(board, config):
    board.mount_ram_fs(64)  # 32 KiB: LittleFS blocks of 512 bytes, too small for the package
    result = deploy("--port", board.port, "--config", str(config), "--source")
    assert result.returncode == 1
    assert "not enough space on the board" in result.stderr
    assert "KiB is free" in result.stderr
    assert board.exec("import os; print(os.listdir())").strip() == "[]", "something was copied"


def test_bad_config_is_refused_before_the_port(tmp_path):
    bad = tmp_path / "ota_config.json"
    bad.write_text(json.dumps(dict(CONFIG, chunk_size=1000)))
    result = deploy("--port", "/dev/no-such-port", "--config", str(bad))
    assert result.returncode == 1
    assert "the config fails the device's checks" in result.stderr
    assert "'chunk_size' must be a positive multiple of 4096" in result.stderr
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({k: v for k, v in CONFIG.items() if k != "product_id"}))
    result = deploy("--port", "/dev/no-such-port", "--config", str(missing))
    assert result.returncode == 1 and "'product_id' is missing" in result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{host: ")
    result = deploy("--port", "/dev/no-such-port", "--config", str(broken))
    assert result.returncode == 1 and "is not valid JSON" in result.stderr


def test_missing_port():
    result = deploy("--port", "/dev/no-such-port")
    assert result.returncode == 1
    assert "port /dev/no-such-port does not exist" in result.stderr


def test_wrong_arch_is_refused(board):
    result = deploy("--port", board.port, "--arch", "xtensawin")
    assert result.returncode == 1
    assert "runs native code for %s" % ARCH in result.stderr
    assert not (board.fs / "lib").exists()


def test_usage_and_help():
    assert deploy().returncode == 2  # --port is required
    helped = deploy("--help")
    assert helped.returncode == 0 and "--port" in helped.stdout and "--source" in helped.stdout


def test_plain_http_config_is_deployed_with_a_warning(tmp_path):
    """"https": false is allowed, and said plainly before anything else happens."""
    plain = tmp_path / "ota_config.json"
    plain.write_text(json.dumps(CONFIG))
    result = deploy("--port", "/dev/no-such-port", "--config", str(plain))
    assert "config %s: ok" % plain in result.stdout
    warning = [line for line in result.stdout.splitlines() if '"https": false' in line]
    assert len(warning) == 1, result.stdout
    assert "read the Authorization header" in warning[0] and "serve any image" in warning[0]
    assert "only a signature check (trusted_keys) then protects the flash, and this config sets none" in warning[0]
    signed = tmp_path / "signed.json"
    signed.write_text(json.dumps(dict(CONFIG, trusted_keys=["ab" * 32])))
    result = deploy("--port", "/dev/no-such-port", "--config", str(signed))
    assert "protects the flash" in result.stdout and "sets none" not in result.stdout


HTTPS = {k: v for k, v in CONFIG.items() if k not in ("https", "port")}  # the default: https, port 443
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_https_config_copies_the_ca_file(board, tmp_path):
    """The CA file named by ca_file is read next to the config and lands at ca_file on the board
    (its directory made); no plain-http warning."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "onenet_ca.pem").write_bytes(CA_PEM)
    path = tmp_path / "ota_config.json"
    path.write_text(json.dumps(dict(HTTPS, ca_file="certs/onenet_ca.pem")))
    result = deploy("--port", board.port, "--config", str(path), "--source")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CA file certs/onenet_ca.pem" in result.stdout
    assert '"https": false' not in result.stdout
    assert (board.fs / "certs" / "onenet_ca.pem").read_bytes() == CA_PEM
    assert json.loads((board.fs / "ota_config.json").read_text())["ca_file"] == "certs/onenet_ca.pem"


def test_https_config_without_its_ca_file_is_refused_before_the_port(tmp_path):
    path = tmp_path / "ota_config.json"
    path.write_text(json.dumps(HTTPS))
    result = deploy("--port", "/dev/no-such-port", "--config", str(path))
    assert result.returncode == 1 and "field 'ca_file' is missing: https" in result.stderr
    path.write_text(json.dumps(dict(HTTPS, ca_file="ca.pem")))
    result = deploy("--port", "/dev/no-such-port", "--config", str(path))
    assert result.returncode == 1
    assert "the config's ca_file 'ca.pem': %s cannot be read" % (tmp_path / "ca.pem") in result.stderr
    assert "does not exist" not in result.stderr  # stopped before the port
