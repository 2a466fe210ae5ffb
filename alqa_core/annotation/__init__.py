"""Stage 4, annotation: priority list, queue and work packages, submissions, reassembly, effort, round state.

- :mod:`.priority`: cases ranked by attention size, the queue budget, the stop rule (003 §3.2);
- :mod:`.outliers`: the outlier-first queue strategy (000);
- :mod:`.queue`: the round's queue by the configured strategy, and its work packages;
- :mod:`.work_package`: what an annotator opens for one queued case, an immutable version each;
- :mod:`.packages`: a case's package versions (the newest, one by id, its pseudo label);
- :mod:`.inbox`: the submission format; writing an entry (``alqa submit``); finding complete entries;
- :mod:`.label_files`: submitted NIfTI, NRRD and 3D Slicer .seg.nrrd files read by organ name;
- :mod:`.validation`: one entry checked against its case;
- :mod:`.store`: the immutable submission store and the quarantine;
- :mod:`.intake`: one pass over the inbox (validate, record, store or quarantine), the sensor's job;
- :mod:`.revisions`: a case's accepted submissions as revisions, and its revised label;
- :mod:`.reassembly`: original > revised > pseudo per organ, with provenance;
- :mod:`.labelled`: every case's reassembled label, each round and after each answer;
- :mod:`.effort`, :mod:`.effort_summary`: what each submission cost, and per round;
- :mod:`.rounds`, :mod:`.status`: where the campaign stands, from the catalog alone;
- :mod:`.worklist`: an annotator's view of the round's queue and the next case (``alqa serve``);
- :mod:`.annotators`: annotator credentials, salted hashes only (``alqa annotators``);
- :mod:`.segments`: MONAI Label's label names and ``label_info`` mapped to organs by name.

Nothing here imports torch or MONAI: sensors and ``alqa submit`` stay light.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "annotators": ["ANNOTATOR_RE", "Annotator", "active_annotator", "add_annotator", "list_annotators", "revoke_annotator", "validate_annotator", "verify_secret"],
        "effort": ["EFFORT_COLUMNS", "OrganCorrection", "SubmissionEffort", "effort_records", "minutes_between", "organ_corrections", "parse_timestamp", "submission_effort", "submission_efforts"],
        "effort_summary": ["per_submission", "round_savings", "summarize_effort"],
        "inbox": ["InboxEntry", "KINDS", "SubmissionMeta", "read_meta", "scan_inbox", "submitted_package", "submitted_segments", "submitted_slices", "write_submission"],
        "intake": ["IntakeResult", "WAIT_FACTOR", "process_inbox", "verdict_of"],
        "label_files": ["LABEL_SUFFIXES", "label_suffix", "read_submitted_label"],
        "labelled": ["reassemble_cases"],
        "outliers": ["DEFAULT_FAILURE_THRESHOLD", "latest_case_grades", "outlier_queue", "predicted_failures"],
        "packages": ["case_packages", "find_package", "newest_package", "package_of", "package_pseudo_label"],
        "priority": ["AnnotationQueue", "CaseAttentionSummary", "DEFAULT_MEASURE", "MEASURES", "OrganAttention", "PriorityEntry", "PriorityList", "StopDecision", "queue_budget", "rank_attention_rows", "rank_cases", "select_queue", "stop_rule", "summaries_from_records"],
        "queue": ["RoundQueue", "priority_for_round", "priority_from_attention", "queue_for_round", "queue_round", "write_packages"],
        "reassembly": ["OrganProvenance", "REVISION_RULE", "ReassembledLabel", "Revision", "SOURCE_RANK", "reassemble", "reassemble_case", "select_revision"],
        "revisions": ["revisions_of", "submission_label", "submission_package", "write_revised_label"],
        "rounds": ["RoundState", "accepted_submissions", "advance_on_answers", "awaiting_reassembly", "close_round", "reviewed_cases", "revised_slices", "round_queue", "round_state"],
        "segments": ["SKIPPED_SEGMENTS", "is_positional", "label_values", "needs_values", "parse_label_info", "positional_names", "segments_from_label_info", "to_positional"],
        "status": ["CampaignStatus", "campaign_status"],
        "store": ["move_into_store", "quarantine_entry", "quarantine_folder", "store_accepted", "store_record", "stored_path"],
        "validation": ["Verdict", "apply_slice_revision", "check_revision", "slice_revision_problem", "validate_entry"],
        "work_package": ["WorkPackage", "itksnap_label_description", "package_content_sha256", "read_work_package", "slicer_color_table", "slicer_seg_nrrd", "write_work_package"],
        "worklist": ["WorkItem", "Worklist", "inbox_waiting", "next_item", "read_worklist", "worklist_fingerprint"],
    },
)
