"""Argv presets per runner (data, not code paths)."""

PRESETS = {
    # Batch on this machine. The DirectRunner picks its FnApiRunner engine for
    # this graph (Sessions windows keep it off Prism).
    "direct": ["--runner=DirectRunner"],
}
