"""docs/operations.md's metrics table is what /metrics exports: every metric under the name a
scraper sees, and every label value the service records, so an operator's dashboard can be
written from the doc alone."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

import service.metrics as metrics


def exported_name(metric: MetricWrapperBase) -> str:
    """prometheus-client exposes a counter `x` as `x_total`."""
    return f"{metric._name}_total" if metric._type == "counter" else metric._name


def table_rows(repo_root) -> dict[str, str]:
    """The metrics table's rows, by the metric name in their first cell."""
    text = (repo_root / "docs" / "operations.md").read_text()
    return {
        row.split("|")[1].strip(" `"): row
        for row in text.splitlines()
        if row.startswith("| `emotion_")
    }


def test_every_exported_metric_has_a_row_under_its_scraped_name(repo_root):
    exported = {
        exported_name(value)
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
    }
    assert exported == set(table_rows(repo_root))


def test_the_rejection_and_stage_rows_name_every_label_value(repo_root):
    rows = table_rows(repo_root)
    for reason in metrics.REJECTION_REASONS:
        assert f"`{reason}`" in rows["emotion_images_rejected_total"], reason
    for stage in metrics.STAGES:
        assert f"`{stage}`" in rows["emotion_stage_duration_seconds"], stage
