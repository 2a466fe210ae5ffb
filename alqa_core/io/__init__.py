"""Reading and writing CT data: NIfTI (nibabel), DICOM (pydicom), atomic files, content hashes.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "atomic": ["atomic_folder", "atomic_path", "atomic_write_bytes", "atomic_write_text", "copy_atomic"],
        "dicom": ["DicomSeriesInfo", "LPS_TO_RAS", "MISSING_SLICE_FACTOR", "codec_hint", "list_dicom_series", "read_dicom_grid", "read_dicom_series"],
        "dicomweb": ["AS_STORED", "AUTH_ENV", "dicomweb_client"],
        "hashing": ["CHUNK_BYTES", "file_sha256", "is_sha256_hex"],
        "nifti": ["NIFTI_SUFFIXES", "integral_labels", "read_ct", "read_grid", "read_label", "read_nifti_array", "read_soft_prediction", "write_ct", "write_label", "write_nifti", "write_soft_prediction"],
    },
)
