"""The product out: the labelled dataset, every case, exported with provenance and a dataset card.

- :mod:`.nnunet`: nnU-Net v2 raw layout, provenance.csv, organ_summary.csv;
- :mod:`.card`: the dataset card (README.md): rounds, human review per organ, annotators.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "card": ["HUMAN", "SOURCES", "dataset_card", "organ_summary"],
        "nnunet": ["ExportResult", "export_cases", "export_nnunet"],
    },
)
