-- Releases a shard's cleanup lease, only for its holder.
--
-- KEYS[1] the shard's lease key
-- ARGV[1] the holder's token
-- Returns 1 if the lease was released, 0 if the token no longer held it.

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
