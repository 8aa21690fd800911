"""The queue side: jobs claimed from PostgreSQL and rendered (the worker and its JobRunner deployment),
the render cache, job inputs, backpressure on intake, backlog-driven autoscaling, and data ageing."""
