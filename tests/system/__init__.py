"""System tests: real worker subprocesses, killed with SIGKILL mid-invocation."""
