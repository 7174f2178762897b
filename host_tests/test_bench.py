"""`python -m tools bench --quick`: the table and the JSON have their shape, and the count-type
figures meet their targets. Timings are never asserted (the bench reports them)."""
import json
import subprocess
import sys

from conftest import REPO


def test_quick_bench_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tools", "bench", "--quick", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert {"date", "machine", "quick", "reps", "rows"} <= set(result)
    assert result["quick"] is True and result["reps"] == 1
    assert {"cpu", "cores", "micropython"} <= set(result["machine"])
    rows = {r["name"]: r for r in result["rows"]}
    for r in result["rows"]:
        assert {"name", "label", "value", "unit", "group"} <= set(r), r
        assert not r.get("error"), r
    for name in ("throughput.baseline", "throughput.device", "throughput.ratio", "throughput.ratio_onefragment",
                 "throughput.ratio_nosteps", "throughput.ratio_upgrade", "heap.import_package",
                 "heap.import_download_path", "heap.floor.65536", "heap.live.65536"):
        assert isinstance(rows[name]["value"], (int, float)) and rows[name]["value"] > 0, rows[name]
    # delta: apply MB/s (from a file and from memory), the ratio to the download, the patch size
    for how in ("zlib", "heatshrink", "none"):
        for name in ("delta.%s" % how, "delta.%s.memory" % how, "delta.%s.ratio" % how, "delta.%s.patch" % how):
            assert rows[name]["group"] == "delta", rows[name]
            assert isinstance(rows[name]["value"], (int, float)) and rows[name]["value"] > 0, rows[name]
        assert rows["delta.%s" % how]["patch_bytes"] > 0
    assert rows["delta.zlib.patch"]["value"] < 100 and rows["delta.heatshrink.patch"]["value"] < 100
    # sota: unpack MB/s of a gzip and a plain bundle
    for name in ("sota.gzip", "sota.plain"):
        assert rows[name]["group"] == "sota" and rows[name]["unit"] == "MB/s", rows[name]
        assert isinstance(rows[name]["value"], (int, float)) and rows[name]["value"] > 0, rows[name]
        assert rows[name]["bundle_bytes"] > 0
    # the download path as a download now loads it; nothing allocated between sector writes
    assert ".cycle" in rows["heap.import_download_path"]["note"] and ".south" in rows["heap.import_download_path"]["note"]
    assert rows["heap.loop_allocations"]["value"] == 0 and rows["heap.loop_allocations"]["ok"], rows["heap.loop_allocations"]
    # signature: the check's time, its RSA's, its heap; 18 multiplications per block for e = 65537
    for name in ("signature.verify", "signature.rsa", "signature.import", "signature.heap", "signature.floor.cycle"):
        assert rows[name]["group"] == "signature" and rows[name]["value"] > 0, rows[name]
    assert rows["signature.modmul"]["value"] == 18
    # the counts: one connection, one token check, each sector erased once, at most a sector again
    assert rows["download.connections"]["value"] == 1
    assert rows["download.token_checks"]["value"] == 1
    assert rows["download.erases_per_sector"]["value"] == 1 and rows["download.erases_per_sector"]["min"] == 1
    assert rows["download.erases_per_sector_after_drop"]["value"] == 1
    assert 0 <= rows["download.redownloaded"]["value"] <= 4096
    # the table names the machine and the date, and every figure
    assert result["date"][:4] in proc.stdout and "machine:" in proc.stdout
    for r in result["rows"]:
        assert r["label"] in proc.stdout


def test_delta_alone_measures_the_download_to_compare_with(tmp_path):
    """--only delta: the ratio still has its denominator (throughput measured for it), and the
    table holds only the delta rows."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tools", "bench", "--quick", "--only", "delta", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert rows and {r["group"] for r in rows} == {"delta"}
    assert all(r["value"] > 0 for r in rows)


def test_a_row_is_one_function(tmp_path):
    """Delta and SOTA rows join with one @row function: it runs, its figures land in the table."""
    from tools import bench

    @bench.row("extra")
    def extra(ctx):
        return [bench.figure("extra.answer", "an added row", 42, "B")]

    try:
        class Args:
            quick, reps, only, keep, json = True, None, ["extra"], None, None

        result = bench.run(Args, tmp_path)
        assert [r["name"] for r in result["rows"]] == ["extra.answer"]
        assert result["rows"][0]["group"] == "extra"
    finally:
        bench.ROWS.remove(("extra", extra))


def test_batch_work_directory_and_close(tmp_path, capsys):
    """tools.batch, the close bench and campaign share: a temporary work directory goes when
    the block ends (even by an exception), a --keep one stays; the result is shown, written as
    JSON, and the exit status says whether it failed."""
    from tools import batch

    with batch.workdir(None, "bench-test-") as work:
        (work / "f").write_text("x")
    assert not work.exists()
    try:
        with batch.workdir(None, "bench-test-") as work:
            raise KeyError("boom")
    except KeyError:
        pass
    assert not work.exists()
    kept = tmp_path / "kept" / "deeper"
    with batch.workdir(str(kept), "bench-test-") as work:
        assert work == kept and work.is_dir()
    assert kept.is_dir()
    out = tmp_path / "r.json"
    assert batch.finish({"a": 1}, lambda r: print("shown", r["a"]), str(out), failed=False) == 0
    assert json.loads(out.read_text()) == {"a": 1} and "shown 1" in capsys.readouterr().out
    assert batch.finish({"a": 2}, lambda r: None, None, failed=True) == 1
