"""`swarm mcp`: the swarm as an MCP server, so AI agents (Claude Code, Claude Desktop, Cursor,
any MCP client) can post tasks, wait for findings, ask mega-shards and read status and spend.

cli.py       the `swarm mcp` parser and entry point; imports no SDK until it serves
settings.py  McpSettings (SWARM_MCP_*), built once with the swarm's and the bus's settings
swarm.py     what each tool does, over one Redis client: no MCP types in it
server.py    the MCP tools and resources (official `mcp` SDK), stdio or streamable HTTP
"""
