"""swarmbus shared code: the protocol (pure data), the Redis Streams bus, and service runtime."""
