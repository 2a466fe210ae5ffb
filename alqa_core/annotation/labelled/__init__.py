"""The labelled dataset: revisions, reassembly with provenance, every case each round, effort, where the campaign stands.

- :mod:`.answers`: a case's accepted submissions, each read once (its label as validated, its package);
- :mod:`.revisions`: a case's answers as revisions, its revised label that counts, and that label read back;
- :mod:`.revise_cases`: the answered cases' revised labels and each answer's effort, after each submission;
- :mod:`.reassembly`: original > revised > pseudo per organ, with provenance;
- :mod:`.reassemble_cases`: every case's reassembled label from its revised label, each round and after each answer;
- :mod:`.effort`, :mod:`.effort_summary`: what each submission cost, and per round;
- :mod:`.rounds`, :mod:`.status`: the round's answers, the transitions they cause, what the round loop does next, and where the campaign stands, from the catalog alone.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use.
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "answers": ["Answer", "accepted_label", "case_answers"],
        "effort": ["EFFORT_COLUMNS", "OrganCorrection", "SubmissionEffort", "effort_records", "minutes_between", "organ_corrections", "parse_timestamp", "submission_effort", "submission_efforts"],
        "effort_summary": ["per_submission", "round_savings", "summarize_effort"],
        "reassemble_cases": ["reassemble_cases"],
        "revise_cases": ["RevisedCase", "revise_cases"],
        "reassembly": ["OrganProvenance", "REVISION_RULE", "ReassembledLabel", "Revision", "SOURCE_RANK", "reassemble", "reassemble_case", "select_revision"],
        "revisions": ["REVISIONS", "revision_of", "revisions_from", "revisions_of", "write_revised_label"],
        "rounds": ["RoundState", "accepted_submissions", "advance_on_answers", "awaiting_reassembly", "close_round", "reviewed_cases", "revised_slices", "round_queue", "round_state", "what_next"],
        "status": ["CampaignStatus", "campaign_status"],
    },
)
