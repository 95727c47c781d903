"""Datasets: manifests with checksums, a verifying downloader, idx parsing and in-memory splits."""
