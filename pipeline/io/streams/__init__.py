"""Pub/Sub and Kinesis: URIs, readers, the DirectRunner feed, sinks and the live generator."""
