"""Behind the manager: the cleanup run, its scheduler, the one path for endings, session-end events and
the counters."""
