"""Reading and writing CT data: NIfTI (nibabel), DICOM (pydicom), atomic files."""
