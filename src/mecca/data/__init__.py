"""Data handling: regions of interest, crops, augmentation, phantoms and datasets."""
