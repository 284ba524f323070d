"""The journal: entries and their JSON form, the store protocol, and records for people."""
