-- Extends a shard's cleanup lease, only for its holder.
--
-- KEYS[1] the shard's lease key
-- ARGV[1] the holder's token
-- ARGV[2] the new TTL (ms)
-- Returns 1 if the lease was extended, 0 if the token no longer holds it.

local lease, token, ttl_ms = KEYS[1], ARGV[1], ARGV[2]

if redis.call('GET', lease) == token then return redis.call('PEXPIRE', lease, ttl_ms) end
return 0
