-- Extends a shard's cleanup lease, only for its holder.
--
-- KEYS[1] the shard's lease key
-- ARGV[1] the holder's token
-- ARGV[2] the new TTL (ms)
-- Returns 1 if the lease was extended, 0 if the token no longer holds it.

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
