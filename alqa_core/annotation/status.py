"""``alqa status``: where the campaign stands, from the catalog alone."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from alqa_core.annotation.rounds import RoundState, round_state
from alqa_core.catalog import Catalog
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class CampaignStatus:
    workspace: str
    n_cases: int
    state: RoundState
    submissions: pd.DataFrame
    effort: pd.DataFrame

    def render(self) -> str:
        s = self.state
        lines = [f"workspace {self.workspace}: {self.n_cases} cases"]
        if s.round_index < 0:
            return "\n".join(lines + ["no round started yet (materialize round_job)"])
        lines.append(f"round {s.round_index}: queue of {len(s.queue)} (top: {s.queue[0] if s.queue else '-'}), answered {len(s.answered)}/{len(s.queue)}")
        if s.pending:
            lines.append("  waiting for: " + ", ".join(s.pending))
        subs = self.submissions
        counts = subs.status.value_counts().to_dict() if not subs.empty else {}
        lines.append("submissions: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("accepted", "rejected", "duplicate")))
        if not subs.empty:
            for r in subs[subs.status == "rejected"].sort_values("entry").itertuples():
                lines.append(f"  rejected {r.entry}: {r.reasons}")
            for r in subs[(subs["status"] == "accepted") & (subs["flags"].fillna("") != "")].itertuples():
                lines.append(f"  flagged {r.entry}: {r.flags}")
        if not self.effort.empty:
            from alqa_core.annotation.effort_summary import summarize_effort

            summary = summarize_effort(self.effort)
            lines.append("effort per round and annotator:")
            lines += ["  " + line for line in summary.to_string(index=False).splitlines()]
        if s.decision is not None:
            lines.append(("CONVERGED: " if s.converged else "not converged: ") + s.decision.reason)
        return "\n".join(lines)


def campaign_status(layout: WorkspaceLayout) -> CampaignStatus:
    cat = Catalog(layout.catalog)
    return CampaignStatus(str(layout.root), len(cat.read("cases")), round_state(cat), cat.read("submissions"), cat.read("effort"))
