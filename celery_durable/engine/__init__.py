"""The machinery behind ``DurableContext``: replay, steps, attempts."""
