"""The product out: the labelled dataset exported in nnU-Net v2 raw layout with provenance.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "nnunet": ["ExportResult", "export_nnunet"],
    },
)
