"""Ways to watch the proxy: the live terminal dashboard (the web one is proxy.dashboard)."""
