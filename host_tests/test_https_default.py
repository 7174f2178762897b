"""HTTPS by default: a config without "https" talks TLS (port 443 when none is given) and
needs the platform's CA certificate (ca_file), refused at load time when it is missing;
plain HTTP only with "https": false. End to end: a board with the default config upgrades
against the mock platform served over TLS."""
import shutil
import ssl

import pytest

from conftest import DEV_ID, Board
from test_fota_codes import result_of, run
from test_fota_faults import upgraded_in_one_boot

BASE = {"product_id": "123456", "access_key": "a2V5", "device_id": "20001"}


def rules():
    from tools.deploy import load_config_rules

    return load_config_rules()


def test_https_is_the_default_with_port_443():
    r = rules()
    cfg = r.from_dict(dict(BASE, ca_file="ca.pem"))
    assert cfg.https is True and cfg.port == 443 and cfg.ca_file == "ca.pem"
    assert r.from_dict(dict(BASE, ca_file="ca.pem", port=8443)).port == 8443


def test_plain_http_only_when_the_config_says_so():
    cfg = rules().from_dict(dict(BASE, https=False))
    assert cfg.https is False and cfg.port == 80


@pytest.mark.parametrize("extra", [{}, {"https": True}, {"https": True, "ca_file": ""}])
def test_https_without_a_ca_file_is_a_config_error_naming_ca_file(extra):
    r = rules()
    with pytest.raises(r.ConfigError, match="field 'ca_file' is missing: https"):
        r.from_dict(dict(BASE, **extra))


def test_a_ca_file_with_plain_http_is_still_refused():
    r = rules()
    with pytest.raises(r.ConfigError, match="field 'ca_file' is set but https is false"):
        r.from_dict(dict(BASE, https=False, ca_file="ca.pem"))


def test_configs_for_the_plain_mock_say_https_false(platform, board):
    """Tests, demo, bench and campaign build their configs with MockPlatform.device_config."""
    assert platform.device_config(DEV_ID)["https"] is False
    assert board.config["https"] is False


def test_the_board_stops_at_the_config_without_a_ca_file(board, platform):
    """On the board: the cycle stops at load_config with the message, nothing is asked."""
    board.config.pop("https")
    board.install()
    result = run(board)
    assert "ca_file" in result.output and "is missing: https" in result.output, result.output
    assert result_of(result.output) == "none"
    assert platform.requests == []


@pytest.fixture
def tls_platform(tmp_path):
    trustme = pytest.importorskip("trustme")
    from tools.mockplatform import DEFAULT_ACCESS_KEY, DEFAULT_PRODUCT_ID, MockPlatform

    from conftest import OLD_VERSION, UNIQUE_ID

    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(ctx)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    with MockPlatform(product_id=DEFAULT_PRODUCT_ID, access_key=DEFAULT_ACCESS_KEY, ssl_context=ctx) as mock:
        mock.add_device(DEV_ID, unique_id=UNIQUE_ID, f_version=OLD_VERSION)
        yield mock, pem
        assert not mock.errors, "the mock platform itself failed: %r" % mock.errors


def test_upgrade_over_tls_with_the_default_config(tmp_path, tls_platform):
    """The config names no "https" (the default) and the CA file on the board: every request,
    the download included, goes over TLS and the upgrade completes."""
    platform, pem = tls_platform
    board = Board(tmp_path / "device", platform)
    board.config.pop("https")
    shutil.copy(pem, board.device.fs / "ca.pem")
    board.install(host="localhost", ca_file="ca.pem")  # the certificate's name
    assert "https" not in board.config
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    result = run(board)
    assert platform.url.startswith("https://")
    assert [r.endpoint for r in platform.requests if r.endpoint == "download"], result.output
    upgraded_in_one_boot(board, platform, task, new, result)
    assert board.device.corruptions() == []
