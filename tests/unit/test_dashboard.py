"""The Grafana dashboard in deploy/grafana: it loads, and every query names only series that exist.

Our series are what deployments/metrics.py defines (as Ray exposes them); Serve's are the list kept
beside the dashboard (serve_metrics.json), which tests/integration/test_metrics.py checks against a
real scrape of Ray's endpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deployments import metrics

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset"}


def series_in(expr: str) -> set[str]:
    """The series names a PromQL expression selects: identifiers that are neither functions, keywords,
    label names in `{...}` / `by (...)`, nor range or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, e.g. [$__rate_interval]
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        following = expr[match.end():].lstrip()
        if following.startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((FOLDER / "sastre_dashboard.json").read_text())


def queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_expression_reader_finds_series_and_nothing_else():
    expr = ('histogram_quantile(0.95, sum by (le, stage) (rate(ray_sastre_stage_seconds_bucket{stage="generate"}'
            '[$__rate_interval]))) / on (stage) max(ray_x) + sum without (replica) (ray_y_total)')
    assert series_in(expr) == {"ray_sastre_stage_seconds_bucket", "ray_x", "ray_y_total"}


def test_the_dashboard_is_a_grafana_dashboard_with_distinct_placed_panels(dashboard):
    assert dashboard["uid"] and dashboard["title"] == "Sastre"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":  # each query asks the data source the dashboard lets one pick
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]


def test_every_query_names_only_series_the_service_or_serve_exports(dashboard):
    serve = set(json.loads((FOLDER / "serve_metrics.json").read_text())["metrics"])
    known = metrics.exposed_names() | serve
    unknown = {(title, name) for title, expr in queries(dashboard) for name in series_in(expr) if name not in known}
    assert unknown == set()


def test_every_metric_of_ours_is_on_the_dashboard(dashboard):
    shown = {name for _, expr in queries(dashboard) for name in series_in(expr)}
    base = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in shown}
    assert {metrics.PREFIX + metric.name for metric in metrics.ALL} - base == set()


def test_the_panels_cover_backlog_throughput_latency_replicas_and_errors(dashboard):
    rows = [panel["title"].split(" (")[0] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ["Backlog", "Throughput", "Latency", "Generator", "Replicas", "Errors and refusals"]
    exprs = " ".join(expr for _, expr in queries(dashboard))
    assert "histogram_quantile(0.95, sum by (le, stage)" in exprs  # latency percentiles per stage
    assert "max by (deployment) (ray_serve_autoscaling_target_replicas)" in exprs  # replicas per deployment
