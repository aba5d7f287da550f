"""DICOMweb (PS3.18) under /dicom-web: QIDO-RS, WADO-RS, STOW-RS over the instance store."""
