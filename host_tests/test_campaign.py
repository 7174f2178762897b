"""The fault campaign (tools/campaign.py): randomised network faults and power cuts, every
invariant checked after every boot and at the end. A short campaign runs with the suite; the
full one (500 schedules) is `pytest -m slow` or `python -m tools campaign --runs 500`."""
import pytest

from tools import campaign

def run_campaign(tmp_path, runs, seed):
    summary = campaign.campaign(runs, seed, tmp_path, jobs=2)
    assert summary["runs"] == runs == sum(summary["outcomes"].values())
    failures = summary["failures"]
    assert not failures, "\n\n".join("%d:%d %s" % (r["seed"], r["index"], r["violation"]) for r in failures)
    return summary


def test_schedules_are_reproducible_from_the_seed():
    assert campaign.schedule(7, 3) == campaign.schedule(7, 3)
    assert campaign.schedule(7, 3) != campaign.schedule(7, 4)
    kinds = {f[0] for i in range(200) for b in campaign.schedule(1, i)["boots"] for f in b["faults"]}
    assert kinds >= {"drop", "stall", "stall-body", "http-error", "errno", "ignore-range", "corrupt",
                     "cancel-at", "expire-token"}
    power = {b["power"][0] if b["power"][0] != "cut" else b["power"][1].split("=")[0]
             for i in range(200) for b in campaign.schedule(1, i)["boots"] if b["power"]}
    assert power == {"writes", "erases", "set_boot", "mark_valid", "kill-at-step", "kill-at-byte"}


def test_short_campaign(tmp_path):
    summary = run_campaign(tmp_path, 30, seed=20240601)
    assert summary["outcomes"].get("upgraded", 0) > 0


@pytest.mark.slow
def test_full_campaign(tmp_path):
    summary = run_campaign(tmp_path, 500, seed=1)
    assert summary["seconds"] < 15 * 60
