"""The HTTP collector players send beacons and CMCD reports to (server.py)."""
