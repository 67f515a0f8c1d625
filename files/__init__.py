"""Shared medical files: names, type detection, encryption at rest, blob storage, DICOM."""
