-- Releases a shard's cleanup lease, only for its holder.
--
-- KEYS[1] the shard's lease key
-- ARGV[1] the holder's token
-- Returns 1 if the lease was released, 0 if the token no longer held it.

local lease, token = KEYS[1], ARGV[1]

if redis.call('GET', lease) == token then return redis.call('DEL', lease) end
return 0
