"""Compression methods: a config dataclass and a plan the runtime executes, one file each."""
