"""The control API served under ``/v1`` by the daemon's HTTP server (see ``routes``)."""
