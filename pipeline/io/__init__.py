"""Where records come from and results go: files and BigQuery (files.py),
Pub/Sub and Kinesis (streams/), and the DirectRunner's replay and feed
plumbing (replay.py, directrunner.py)."""
