-- wrk: send every request as a POST without a body (heartbeat, create).
wrk.method = "POST"
