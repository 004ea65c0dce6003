"""The HTTP edge: routes, their one error table, identity, conditional requests, body limit, CORS,
the access log and the offline API docs."""
