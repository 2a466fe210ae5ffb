"""Turning core results into Dagster metadata a user wants to see in the UI."""

from __future__ import annotations

import base64
from typing import Iterable, Mapping, Sequence

import dagster as dg
import pandas as pd


def png_markdown(png: bytes, alt: str = "preview") -> dg.MarkdownMetadataValue:
    """An inline PNG (data URI) shown in the asset's metadata panel."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")


def table(frame: pd.DataFrame, max_rows: int = 25) -> dg.TableMetadataValue:
    """A table shown as such in the UI (first ``max_rows`` rows)."""
    frame = frame.head(max_rows)
    columns = [dg.TableColumn(str(c), _column_type(frame[c])) for c in frame.columns]
    records = [dg.TableRecord({str(k): _plain(v) for k, v in row.items()}) for row in frame.to_dict(orient="records")]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def numbers(values: Mapping[str, float], prefix: str = "") -> dict[str, dg.FloatMetadataValue]:
    """Numeric metadata (the UI plots these over materializations)."""
    return {f"{prefix}{k}": dg.MetadataValue.float(float(v)) for k, v in values.items()}


#: rows of a run summary's per-case table shown in the UI (every row is in the catalog or the workspace)
SUMMARY_ROWS = 25


def run_summary(context: dg.AssetExecutionContext, rows: Sequence[Mapping], **facts) -> None:
    """One event per run of a per-case asset: an observation with the run's facts and its first per-case rows.

    Not metadata per partition: ``add_asset_metadata(partition_key=...)`` puts a payload on every
    case's event and has Dagster read every registered partition on each call, so it cost more than
    the per-case work of a small case. Per-case facts are in the catalog and the workspace (previews
    are PNG files at ``WorkspaceLayout.preview``); Dagster still records one materialization per case.
    """
    frame = pd.DataFrame(list(rows))
    meta = {**facts, "cases_done": len(frame)}
    if not frame.empty:
        meta["per_case"] = table(frame, SUMMARY_ROWS)
    context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=meta))


def refusals(context: dg.AssetExecutionContext, failed: Mapping[str, Mapping]) -> None:
    """Each case a batch refused: a warning in the run's log and the reason on its partition's metadata."""
    for case_id, row in failed.items():
        context.log.warning(f"case {case_id} refused at {row['stage']}: {row['file']}: {row['reason']}")
        context.add_asset_metadata({"refused": f"{row['file']}: {row['reason']}"}, partition_key=case_id)


def went_on_without(context: dg.AssetExecutionContext, cases: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> None:
    """Each case that went on without a failed member (case -> (members kept, each failure rendered)): a warning in
    the run's log and both on its partition's metadata."""
    for case_id, (kept, lost) in cases.items():
        context.log.warning(f"case {case_id} went on with {', '.join(kept)}, without a failed member: {'; '.join(lost)}")
        context.add_asset_metadata({"members_failed": "; ".join(lost), "went_on_with": ", ".join(kept)}, partition_key=case_id)


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, (list, tuple)) or (isinstance(v, Iterable) and not isinstance(v, (str, bytes))):
        return ",".join(str(x) for x in v)
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)  # timestamps, paths, ...
