-- Gives a live session a new id in the same shard. RENAME keeps every field (last activity included) and
-- the TTL; the deadline index, the user's index and the resume pair move to the new id in the same step.
-- Uses common.lua.
--
-- KEYS[1] the session's hash under its old id
-- KEYS[2] the session's hash under its new id
-- KEYS[3] the shard's deadline index (exp)
-- KEYS[4] the shard's stats hash (unused: kept so every session script names the shard's keys alike)
-- ARGV[1] old id
-- ARGV[2] new id
-- ARGV[3] the shard's key prefix, "<prefix>{<tag>}"
-- ARGV[4] now
-- ARGV[5] user ("u:" + id, or '' for anyone)
-- Returns {fields, ending of the old id}; false if it is missing, expired or another user's; 0 if the
-- new id is already stored.

local old_id, new_id, prefix, user = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local old_key, new_key, exp = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[4])

-- Moves the id's entry in a sorted set to the new id, with the same score.
local function move(index)
  redis.call('ZADD', index, redis.call('ZSCORE', index, old_id), new_id)
  redis.call('ZREM', index, old_id)
end

local fields = live_session(old_key, now, user)
if not fields then return false end
if redis.call('EXISTS', new_key) == 1 then return 0 end
redis.call('RENAME', old_key, new_key)  -- keeps every field and the TTL
move(exp)
local owner, client = fields[USER], fields[CLIENT]
if owner ~= '' then move(user_key(prefix, owner)) end
if client ~= '' then
  local pk = pair_key(prefix, owner, client)
  if redis.call('GET', pk) == old_id then redis.call('SET', pk, new_id, 'KEEPTTL') end
end
return {fields, ending(old_id, fields, 'rotated')}
