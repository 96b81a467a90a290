"""The dispatcher: the swarm's front door. Validates each posted task and routes it to the
cheapest vendor that can do it (`swarm run dispatcher`)."""
