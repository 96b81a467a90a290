"""The worker: takes its vendor's tasks, calls the vendor, publishes findings.

One codebase, deployed once per vendor (`swarm run worker --vendor deepseek`) and scaled
by replica count; everything replicas share (rate limits, cooldowns, done-markers) is in
Redis.
"""
