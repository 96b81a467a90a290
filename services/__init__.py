"""swarmbus services. Each folder is one service; services never import each other.

`services.cli` is the command-line front end (`swarm`): the one place that knows every
service, importing each lazily by name when `swarm run NAME` asks for it.
"""
