"""The annotators' side: their worklist, what they hand back (inbox, label files by organ name, validation, store) and the sensor's pass.

- :mod:`.inbox`: the submission format; writing an entry (``alqa submit``); finding complete entries;
- :mod:`.label_files`: submitted NIfTI, NRRD and 3D Slicer .seg.nrrd files read by organ name;
- :mod:`.segments`: MONAI Label's label names and ``label_info`` mapped to organs by name;
- :mod:`.validation`: one entry checked against its case;
- :mod:`.store`: the immutable submission store, each accepted revision's label as validated, and the quarantine;
- :mod:`.process`: one pass over the inbox (validate, record, store or quarantine), the sensor's job;
- :mod:`.annotators`: annotator credentials, salted hashes only (``alqa annotators``);
- :mod:`.worklist`: an annotator's view of the round's queue, what is answered or waiting, and the next case (``alqa serve``);
- :mod:`.verdicts`: an annotator's submissions with the sensor's verdict (waiting, accepted, accepted with flags, refused) and its reasons.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use.
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "annotators": ["ANNOTATOR_RE", "Annotator", "active_annotator", "add_annotator", "list_annotators", "revoke_annotator", "validate_annotator", "verify_secret"],
        "inbox": ["InboxEntry", "KINDS", "SubmissionMeta", "read_meta", "scan_inbox", "submitted_package", "submitted_segments", "submitted_slices", "write_submission"],
        "label_files": ["LABEL_SUFFIXES", "label_suffix", "read_submitted_label"],
        "process": ["IntakeResult", "WAIT_FACTOR", "process_inbox", "verdict_of"],
        "segments": ["SKIPPED_SEGMENTS", "is_positional", "label_values", "needs_values", "parse_label_info", "positional_names", "segments_from_label_info", "to_positional"],
        "store": ["accepted_label_key", "move_into_store", "quarantine_entry", "quarantine_folder", "store_accepted", "store_label", "store_record", "stored_path"],
        "worklist": ["WorkItem", "Worklist", "inbox_waiting", "next_item", "read_worklist", "worklist_fingerprint"],
        "verdicts": ["ACCEPTED", "DUPLICATE", "FLAGGED", "REFUSED", "SubmissionState", "WAITING", "annotator_submissions", "decided_submissions", "latest_by_case", "waiting_submissions"],
        "validation": ["Verdict", "apply_slice_revision", "check_revision", "slice_revision_problem", "validate_entry"],
    },
)
