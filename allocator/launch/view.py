"""The launch's comparison view in the MLflow UI, opened by the link the CLI prints.

MLflow's chart view, left to itself, shows every metric alphabetically in one section, only
the first 10 runs, and one bar per seed. Its "Share" button stores a view (charts, sections,
grouping, run visibility, filter) as an experiment tag ``mlflow.sharedViewState.<key>`` and
opens it with ``?viewStateShareKey=<key>``; this module writes such a view for each launch:
its runs only, grouped by strategy (mean over seeds with the min–max band), every group
shown, the charts that answer the question first and everything else in named sections.
The JSON shape is the UI's own (``ExperimentPageUIState`` and the runs-charts card
configs of MLflow 3.x, checked against 3.17 in a real browser by the tests).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

SHARE_TAG_PREFIX = "mlflow.sharedViewState."
SHARE_URL_PARAM = "viewStateShareKey"
#: MLflow versions whose UI reads the view written here (lower bound inclusive, upper not)
MLFLOW_RANGE = ((3, 17), (4, 0))
#: the UI's marker of a compressed view: "deflate;" + base64 of the zlib stream
_DEFLATE = "deflate;"


@dataclass(frozen=True)
class Chart:
    """One chart: a bar of a final value, or a line of one or several curves."""

    title: str
    metrics: tuple[str, ...]
    kind: Literal["bar", "line"] = "bar"


@dataclass(frozen=True)
class Section:
    name: str
    charts: tuple[Chart, ...]


@dataclass(frozen=True)
class ViewSpec:
    """What the view shows: the launch's runs grouped by one tag, sections in order."""

    launch_id: str
    group_tag: str
    sections: tuple[Section, ...]


def chart(title: str, *metrics: str, kind: Literal["bar", "line"] = "bar") -> Chart:
    return Chart(title, metrics, kind)


def remaining_sections(
    scalars: Iterable[str], curves: Iterable[str], shown: Iterable[str]
) -> list[Section]:
    """Every logged metric not already charted, in sections named by its first dotted part."""
    done = set(shown)
    by: dict[str, list[Chart]] = {}
    for key in sorted(set(scalars) - done):
        by.setdefault(_section_of(key), []).append(Chart(key, (key,), "bar"))
    for key in sorted(set(curves) - done):
        by.setdefault(_section_of(key), []).append(Chart(key, (key,), "line"))
    return [Section(name, tuple(charts)) for name, charts in sorted(by.items())]


def _section_of(key: str) -> str:
    head, _, rest = key.partition(".")
    if not rest:
        return "run"
    if head == "curve":  # curves by what they trace: curve.share.x -> "curve.share"
        sub = rest.partition(".")[0] if "." in rest else ""
        return f"curve.{sub}" if sub else "curve"
    return head


def ui_state(spec: ViewSpec, n_runs: int) -> dict[str, Any]:
    """The view as the MLflow UI stores it (search facets + UI state, one JSON object)."""
    sections: list[dict[str, Any]] = []
    cards: list[dict[str, Any]] = []
    show = max(10, n_runs)  # a chart's own run limit (default 10) must not hide a group
    for i, section in enumerate(spec.sections):
        sid = f"section-{i}"
        sections.append(
            {"uuid": sid, "name": section.name, "display": True, "isReordered": True,
             "deleted": False, "isGenerated": False}
        )  # fmt: skip
        for j, c in enumerate(section.charts):
            cards.append(_card(c, f"{sid}-chart-{j}", sid, show))
    launch = spec.launch_id.replace("'", "''")
    return {
        "searchFilter": f"tags.launch_id = '{launch}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "compareRunCharts": cards,
        "compareRunSections": sections,
        "isAccordionReordered": True,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": spec.group_tag}],
        },
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "runsHiddenMode": "SHOW_ALL",
        "runsHidden": [],
        "runsVisibilityMap": {},
        "runsPinned": [],
        "runsExpanded": {},
        "hideEmptyCharts": True,
        "viewMaximized": False,
        "runListHidden": False,
        "autoRefreshEnabled": False,
        "globalLineChartConfig": {
            "xAxisKey": "step",
            "lineSmoothness": 0,
            "selectedXAxisMetricKey": "",
        },
    }


def _card(c: Chart, uuid: str, section: str, show: int) -> dict[str, Any]:
    base = {
        "uuid": uuid,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "runsCountToCompare": show,
        "displayName": c.title,
        "metricKey": c.metrics[0],
    }
    if c.kind == "bar":
        return {**base, "type": "BAR"}
    return {
        **base,
        "type": "LINE",
        "selectedMetricKeys": list(c.metrics),
        "lineSmoothness": 0,
        "xAxisKey": "step",
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": False,
        "useGlobalLineSmoothing": False,
        "range": {},
    }


def encode(state: dict[str, Any]) -> str:
    """The tag value: compressed the way the UI's own "Share" compresses (it reads both)."""
    text = json.dumps(state, separators=(",", ":"), sort_keys=True)
    return _DEFLATE + base64.b64encode(zlib.compress(text.encode(), 9)).decode()


def decode(value: str) -> dict[str, Any]:
    """The inverse of :func:`encode` (plain JSON accepted too, as the UI does)."""
    if value.startswith(_DEFLATE):
        value = zlib.decompress(base64.b64decode(value[len(_DEFLATE) :])).decode()
    out: dict[str, Any] = json.loads(value)
    return out


def share_key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def ui_supports_shared_views(version: str | None = None) -> str | None:
    """``None`` if the installed MLflow's UI opens shared views, else why not."""
    try:
        version = version or metadata.version("mlflow")
    except metadata.PackageNotFoundError:
        return "mlflow is not installed"
    parts = tuple(int(p) for p in [*version.split("."), "0"][:2] if p.isdigit())
    low, high = MLFLOW_RANGE
    if len(parts) != 2 or not low <= parts < high:
        want = f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
        return f"MLflow {version} is outside the range the saved view was checked with ({want})"
    bundle = _ui_bundle()
    if bundle is not None:
        text = bundle.read_text(errors="replace")
        if SHARE_TAG_PREFIX not in text or SHARE_URL_PARAM not in text:
            return f"the MLflow {version} UI ({bundle.name}) does not read shared views"
    return None


def _ui_bundle() -> Path | None:
    """The installed MLflow UI's main script, if this install ships the UI."""
    import mlflow

    root = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    found = sorted(root.glob("main.*.js")) if root.is_dir() else []
    return found[0] if found else None
