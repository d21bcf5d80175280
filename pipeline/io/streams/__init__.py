"""Pub/Sub and Kinesis: URIs, readers, the DirectRunner feed and sinks."""
