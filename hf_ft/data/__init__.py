"""Rows: files read and validated into QARows (one line per bad row), the sources (a data folder, files, the hub), and
the seeded splits with the held-out proof."""
