"""Reports rendered by a real browser: headless Chromium loads the HTML and its DOM holds what a buyer reads.

Skipped where no Chromium is installed (`apt-get install chromium` provides /usr/bin/chromium).
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from planner import report as rpt
from planner.fleet import load_fleet
from planner.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium") if p and Path(p).is_file()), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed (/usr/bin/chromium); apt-get install chromium")


class _Text(HTMLParser):
    """Visible text of a DOM (script and style left out), whitespace folded."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def rendered_text(path: Path) -> str:
    """The DOM Chromium builds from the file, as visible text."""
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "<body" in dom
    parser = _Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.parts).split())


def test_scenario_report_shows_the_recommendation_capex_and_monthly_cost(tmp_path):
    scenario = load_scenario(ROOT / "scenarios" / "deepseek-7b-consumer-gpu.yaml")
    report = rpt.build_report(scenario, time_limit_s=10)
    text = rendered_text(rpt.save_report(report, tmp_path / "report.html"))
    assert report.plain.startswith("Rent ") and (" server of " in report.plain or " servers of " in report.plain)
    assert " ".join(report.plain.split()) in text
    costs = {item: amount for item, amount, _ in report.costs}
    assert f"cost per month {costs['cost per month']}" in text
    assert f"buy: capex {costs['buy: capex']}" in text
    assert "buy: break-even against renting" in text and "buy: hosting per month" in text
    e = report.plan.evaluation
    assert costs["cost per month"] == rpt.money(e.usd_per_hour * 730)


def test_fleet_report_shows_the_timeline_and_why_it_bought(tmp_path):
    report = rpt.build_fleet_report(load_fleet(ROOT / "scenarios" / "fleets" / "team-fleet.yaml"))
    text = rendered_text(rpt.save_report(report, tmp_path / "fleet.html"))
    assert "Timeline" in text and "w0 w1 w2" in text and f"w{report.fleet.horizon_weeks - 1}" in text
    pretrain = next(a for a in report.plan.assignments if a.workload == "pretrain-70b")
    assert f"{pretrain.num_gpus} {pretrain.gpu} {pretrain.source}" in text
    assert "H100-SXM pool: owned + bought usable" in text
    assert f"Bought {report.plan.bought_gpus['H100-SXM']} H100-SXM" in text and "Did not buy H200" in text
