"""The live web console (`swarm console`): the fleet, streams and backlog, the last hour's
cost, recent tasks and one task's page, dead-letter and rejected entries with replay, and
cancel, updated live over server-sent events. A Starlette app served by uvicorn; it reads
Redis (its own ACL user, `console`) and writes only through the `swarm` command's own
cancel and replay, behind a token."""
