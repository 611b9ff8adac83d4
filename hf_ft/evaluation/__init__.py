"""Scoring and comparing models on held-out items: the scorer registry, paired statistics, reports, the artifact audit,
the optional judge, and predict."""
