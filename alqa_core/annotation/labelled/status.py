"""``alqa status``: where the campaign stands, from the catalog alone (round states, queue, submissions, errors, effort)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from alqa_core.annotation.labelled.rounds import RoundState, round_state
from alqa_core.case_errors import open_case_errors
from alqa_core.catalog import Catalog
from alqa_core.rounds import RoundRecord, read_rounds
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class CampaignStatus:
    workspace: str
    n_cases: int
    state: RoundState
    rounds: tuple[RoundRecord, ...]
    submissions: pd.DataFrame
    effort: pd.DataFrame
    errors: pd.DataFrame

    def render(self) -> str:
        s = self.state
        lines = [f"workspace {self.workspace}: {self.n_cases} cases ingested"]
        if not self.errors.empty:
            lines.append(f"cases with an open error: {self.errors.case_id.nunique()}")
            lines += [f"  {r.case_id} [{r.stage}] {r.file}: {r.reason}" for r in self.errors.itertuples()]
        if s.round_index < 0:
            return "\n".join(lines + ["no round started yet (alqa round, or materialize round_job)"])
        lines.append("rounds:")
        lines += [f"  round {r.round_index}: {r.state:9s} (attempt {r.attempts}) {r.reason}" for r in self.rounds]
        if s.queue:
            lines.append(f"round {s.round_index} queue of {len(s.queue)} (top: {s.queue[0]}), answered {len(s.answered)}/{len(s.queue)}")
        if s.pending and s.state == "queued":
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
            from alqa_core.annotation.labelled.effort_summary import summarize_effort

            summary = summarize_effort(self.effort)
            lines.append("effort per round and annotator:")
            lines += ["  " + line for line in summary.to_string(index=False).splitlines()]
        if s.converged:
            lines.append(f"CONVERGED in round {s.round_index}: {s.record.reason if s.record else ''}")
        elif s.decision is not None:
            lines.append("not converged: " + s.decision.reason)
        return "\n".join(lines)


def campaign_status(layout: WorkspaceLayout) -> CampaignStatus:
    cat = Catalog(layout.catalog)
    return CampaignStatus(
        str(layout.root), len(cat.read("cases")), round_state(cat), tuple(read_rounds(cat)), cat.read("submissions"), cat.read("effort"), open_case_errors(cat)
    )
