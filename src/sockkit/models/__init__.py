"""Server models: who runs the connections. Each exposes ``serve(server: Server) -> None``."""
