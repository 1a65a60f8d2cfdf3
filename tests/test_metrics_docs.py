"""The Grafana dashboard and the alerting rules in docs/ read metrics the view exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobqueue.contrib.metrics.collector import Snapshot
from jobqueue.contrib.metrics.exposition import render
from jobqueue.engine import metrics

DOCS = Path(__file__).resolve().parent.parent / "docs"
NAME = re.compile(r"\bjobqueue_[a-z_]+")


def exposed() -> set[str]:
    reading = metrics.TopicReading(0, 0, 0, dict.fromkeys(metrics.COUNTERS, 0.0), metrics.histograms({}))
    text = render(Snapshot(topics={"t": reading}))
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_dashboard_is_a_grafana_dashboard_of_exposed_metrics():
    dashboard = json.loads((DOCS / "grafana" / "jobqueue.json").read_text())
    assert dashboard["uid"] == "jobqueue" and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "label_values(jobqueue_jobs, topic)" in json.dumps(variables["topic"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    names = exposed()
    used = set()
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat") and panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            used |= set(NAME.findall(target["expr"]))
    assert used <= names, used - names
    text = json.dumps(dashboard)
    for needed in ("jobqueue_oldest_queued_job_age_seconds", "rate(jobqueue_jobs_succeeded_total",
                   "rate(jobqueue_jobs_failed_total", "histogram_quantile(0.95", "jobqueue_job_wait_seconds_bucket",
                   "jobqueue_job_run_seconds_bucket", "jobqueue_workers", 'status=\\"queued\\"'):
        assert needed in text, needed


def test_the_alerting_rules_watch_age_failures_and_workers():
    rules = yaml.safe_load((DOCS / "prometheus" / "jobqueue-alerts.yml").read_text())
    (group,) = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert {"JobQueueOldestJobWaiting", "JobQueueHighFailureRatio", "JobQueueNoLiveWorkers"} <= set(alerts)
    names = exposed()
    for rule in alerts.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert set(NAME.findall(rule["expr"])) <= names, rule["expr"]
    assert "jobqueue_oldest_queued_job_age_seconds" in alerts["JobQueueOldestJobWaiting"]["expr"]
    assert "jobqueue_jobs_failed_total" in alerts["JobQueueHighFailureRatio"]["expr"]
    assert "jobqueue_workers" in alerts["JobQueueNoLiveWorkers"]["expr"]
    tests = yaml.safe_load((DOCS / "prometheus" / "jobqueue-alerts-test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert tested == set(alerts)
