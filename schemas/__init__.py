"""The wire contract: topic tree, envelope codec, message records. Pure; no I/O."""
