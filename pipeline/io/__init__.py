"""Where records come from and results go: files and BigQuery (files.py),
Pub/Sub and Kinesis (streams/, the DirectRunner's stream feed included), and
the DirectRunner's file replay and patches (replay.py, directrunner.py)."""
