"""A finished run read back: accounting, summary, score, report and charts."""
