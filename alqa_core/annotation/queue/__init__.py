"""What annotators are given: the priority list, the round's queue, work packages and their versions.

- :mod:`.priority`: cases ranked by attention size, the queue budget, the stop rule (003 §3.2);
- :mod:`.outliers`: the outlier-first queue strategy (000);
- :mod:`.round_queue`: the round's priority list (kept in the catalog) and its queue, read from that list by the configured strategy, with its work packages;
- :mod:`.work_package`: what an annotator opens for one queued case, an immutable version each;
- :mod:`.packages`: a case's package versions (the newest, one by id, its pseudo label);
- :mod:`.regions`: a package's attention regions, in the order an annotator visits them (``alqa serve``'s viewer).
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use.
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "outliers": ["DEFAULT_FAILURE_THRESHOLD", "latest_case_grades", "outlier_queue", "predicted_failures"],
        "packages": ["case_packages", "find_package", "newest_package", "package_of", "package_pseudo_label"],
        "priority": ["AnnotationQueue", "DEFAULT_MEASURE", "MEASURES", "PriorityEntry", "PriorityList", "RANK_COLUMNS", "StopDecision", "priority_list", "queue_budget", "rank_attention_rows", "rank_frame", "select_queue", "stop_rule"],
        "regions": ["AttentionRegion", "STRUCTURE", "attention_regions", "organ_regions", "voxel_volume_ml"],
        "round_queue": ["RoundQueue", "priority_for_round", "priority_from_attention", "queue_for_round", "queue_round", "read_priority", "write_packages"],
        "work_package": ["WorkPackage", "itksnap_label_description", "package_content_sha256", "read_work_package", "slicer_color_table", "slicer_seg_nrrd", "write_work_package"],
    },
)
