-- wrk: send every request as a PATCH with a small data document (ours and the bare route alike).
wrk.method = "PATCH"
wrk.body = '{"data": {"case": "db-latency", "step": 3, "notes": ["checked connections"]}}'
wrk.headers["Content-Type"] = "application/json"
