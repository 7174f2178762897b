"""`python -m tools token`: the header it prints passes the mock platform's checker, and the
platform answers the example request made with it."""
import json
import subprocess
import sys
import time
import urllib.request

from conftest import REPO
from tools import onenet_auth
from tools.mockplatform import DEFAULT_ACCESS_KEY, DEFAULT_PRODUCT_ID, MockPlatform


def token(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tools", "token", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_header_verifies_for_each_method():
    for method in ("md5", "sha1", "sha256"):
        result = token("--product-id", DEFAULT_PRODUCT_ID, "--access-key", DEFAULT_ACCESS_KEY,
                       "--method", method, "--lifetime", "600")
        assert result.returncode == 0, result.stderr
        header = result.stdout.strip()
        assert "\n" not in header
        keys = {onenet_auth.product_res(DEFAULT_PRODUCT_ID): DEFAULT_ACCESS_KEY}
        assert onenet_auth.verify(header, keys, time.time()) == (True, "ok")
        fields = onenet_auth.parse(header)
        assert fields["method"] == method
        assert abs(int(fields["et"]) - (time.time() + 600)) < 30
        assert onenet_auth.verify(header, keys, time.time() + 700)[0] is False  # it does expire
        assert "curl -s -H 'Authorization: %s'" % header in result.stderr


def test_device_key_and_the_example_request_against_the_mock():
    device_key = "ZGV2aWNlLWtleS1mb3ItdGhlLXRva2VuLXRlc3Q="
    with MockPlatform() as platform:
        platform.add_device("4242", unique_id="esp-42", f_version="3.1", name="board42", key=device_key)
        host = "%s:%d" % (platform.host, platform.port)
        result = token("--product-id", DEFAULT_PRODUCT_ID, "--access-key", device_key,
                       "--device-name", "board42", "--dev-id", "4242", "--host", host)
        assert result.returncode == 0, result.stderr
        header = result.stdout.strip()
        assert onenet_auth.parse(header)["res"] == "products/%s/devices/board42" % DEFAULT_PRODUCT_ID
        assert onenet_auth.verify(header, platform.keys_by_res(), time.time()) == (True, "ok")
        url = result.stderr.strip().splitlines()[-1].rsplit("'", 2)[-2]
        request = urllib.request.Request(url, headers={"Authorization": header})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
        assert body["errno"] == 0, body
        assert platform.requests[-1].endpoint == "version_query"


def test_key_from_the_environment_and_quiet():
    import os

    env = dict(os.environ, ONENET_ACCESS_KEY=DEFAULT_ACCESS_KEY)
    result = token("--product-id", DEFAULT_PRODUCT_ID, "-q", env=env)
    assert result.returncode == 0 and result.stderr == ""
    keys = {onenet_auth.product_res(DEFAULT_PRODUCT_ID): DEFAULT_ACCESS_KEY}
    assert onenet_auth.verify(result.stdout.strip(), keys, time.time())[0]


def test_usage_errors():
    import os

    env = {k: v for k, v in os.environ.items() if k != "ONENET_ACCESS_KEY"}
    assert token("--access-key", DEFAULT_ACCESS_KEY).returncode == 2  # no product id
    missing = token("--product-id", "1", env=env)
    assert missing.returncode == 2 and "access key is needed" in missing.stderr
    bad = token("--product-id", "1", "--access-key", "not base64!")
    assert bad.returncode == 2 and "not base64" in bad.stderr
    assert token("--product-id", "1", "--access-key", DEFAULT_ACCESS_KEY, "--method", "sha512").returncode == 2
    assert token("--help").returncode == 0
