"""Application (SOTA) tasks end to end: real micropython runs boot.py/main.py with an
application in app/, the mock platform offers a type-2 task with a bundle, and the device
stages, unpacks, swaps, starts and confirms it (or rolls it back) and reports each step.

The bundle format, LittleFS and power cuts at every rename and marker write of unpack and
swap are covered under real micropython in test_sota_unit.py; here the whole flow runs."""
import json

from sim.device import RESET_EXIT
from tools.mockplatform import SOTA
from tools.package_app import build, manifest

OLD_APP = {"main.py": b'print("app 1.0 running")\n', "util.py": b"VALUE = 1\n"}
NEW_APP = {"main.py": b'import helper\nprint("app 1.1 running", helper.VALUE)\n',
           "helper.py": b"VALUE = 2\n"}


def install_app(board, files, version):
    app = board.device.fs / "app"
    app.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (app / name).write_bytes(data)
    (app / "manifest.json").write_bytes(manifest(files, version))


def app_files(board):
    app = board.device.fs / "app"
    return sorted(p.name for p in app.iterdir())


def sota_task(board, bundle, target="1.1", **kw):
    return board.add_task(bundle, target=target, ota_type=SOTA, **kw)


def version_reports(platform):
    return [json.loads(r.body) for r in platform.requests if r.endpoint == "version_report"]


def test_application_upgrade_is_swapped_started_and_confirmed(board, platform):
    install_app(board, OLD_APP, "1.0")
    task = sota_task(board, build(NEW_APP, "1.1", how="gzip"))
    first = board.boot()
    assert first.returncode == RESET_EXIT, first.output
    seq = platform.sequence()
    assert seq[:5] == ["version_report", "check", "check", "token_check", "download"], seq
    assert seq[-1] == "report" and task.reports == [(101, 0)]
    assert version_reports(platform)[0] == {"f_version": "1.0", "s_version": "1.0"}
    second = board.boot()
    out = second.output
    assert second.returncode == 0, out
    assert "app 1.1 running 2" in out and "app 1.0 running" not in out
    assert task.state == "completed" and task.reports == [(101, 0), (201, 0)]
    assert version_reports(platform)[-1] == {"f_version": "1.0", "s_version": "1.1"}
    assert app_files(board) == ["helper.py", "main.py", "manifest.json"]
    fs = sorted(p.name for p in board.device.fs.iterdir())
    assert "app.old" not in fs and "app.bundle" not in fs and "ota_journal.json" not in fs
    third = board.boot()  # settled: no task, the new application starts
    assert "app 1.1 running 2" in third.output and task.reports == [(101, 0), (201, 0)]


def test_application_that_raises_at_import_is_rolled_back(board, platform):
    install_app(board, OLD_APP, "1.0")
    broken = {"main.py": b'raise RuntimeError("broken 1.1")\n'}
    task = sota_task(board, build(broken, "1.1"))
    assert board.boot().returncode == RESET_EXIT
    second = board.boot()
    out = second.output
    assert "broken 1.1" in out and "app 1.0 running" in out, out
    assert task.reports == [(101, 0), (206, 0)] and task.state == "failed"
    assert app_files(board) == ["main.py", "manifest.json", "util.py"]
    assert "app 1.0 running" in board.boot().output


def test_application_not_confirmed_before_a_reset_is_rolled_back(board, platform):
    install_app(board, OLD_APP, "1.0")
    hangs = {"main.py": b'import machine\nprint("app 1.1 resets")\nmachine.reset()\n'}
    task = sota_task(board, build(hangs, "1.1"))
    assert board.boot().returncode == RESET_EXIT
    trial = board.boot()
    assert "app 1.1 resets" in trial.output and trial.returncode == RESET_EXIT
    after = board.boot()
    assert "app 1.0 running" in after.output, after.output
    assert task.reports == [(101, 0), (206, 0)]


def test_too_little_space_is_102_before_any_download(board, platform):
    install_app(board, OLD_APP, "1.0")
    task = sota_task(board, build(NEW_APP, "1.1"))
    platform.set_fault("task-data", {"size": 10 ** 14})  # more than any filesystem here holds
    out = board.boot().output
    assert task.reports == [(102, 0)], out
    assert "download" not in platform.sequence()
    assert "app 1.0 running" in out


def test_malicious_bundle_is_206_and_the_old_application_starts(board, platform):
    install_app(board, OLD_APP, "1.0")
    import io
    import tarfile
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        evil = b"owned"
        man = manifest({"../evil.py": evil}, "1.1")
        for name, data in (("manifest.json", man), ("../evil.py", evil)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    task = sota_task(board, raw.getvalue())
    out = board.boot().output
    assert task.reports == [(206, 0)], out
    assert not (board.device.fs / "evil.py").exists()
    assert "app 1.0 running" in out and app_files(board) == ["main.py", "manifest.json", "util.py"]


def test_corrupted_bundle_is_205(board, platform):
    install_app(board, OLD_APP, "1.0")
    bundle = build(NEW_APP, "1.1")
    platform.set_fault("corrupt", [len(bundle) // 2])
    task = sota_task(board, bundle)
    out = board.boot().output
    assert task.reports == [(205, 0)], out
    assert "app 1.0 running" in out


def test_bundle_download_resumes_after_a_dropped_connection(board, platform):
    install_app(board, OLD_APP, "1.0")
    files = dict(NEW_APP, **{"data.bin": bytes(range(256)) * 1200})  # ~300 KiB: several fragments
    bundle = build(files, "1.1")
    platform.set_fault("drop", [len(bundle) // 2])
    task = sota_task(board, bundle)
    assert board.boot().returncode == RESET_EXIT
    assert "app 1.1 running 2" in board.boot().output
    assert task.reports == [(101, 0), (201, 0)]
    assert (board.device.fs / "app" / "data.bin").read_bytes() == files["data.bin"]
