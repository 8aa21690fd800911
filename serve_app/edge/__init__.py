"""The edge: what every request meets before a route runs (callers behind proxies, rate limits, body caps,
security headers, text PostgreSQL cannot store)."""
