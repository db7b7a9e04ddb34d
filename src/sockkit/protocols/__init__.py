"""Wire formats shared by a service's server side and its clients (pure functions, no I/O)."""
