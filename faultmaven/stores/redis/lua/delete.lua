-- Removes a session and every entry that names it; a missing hash's index entries are dropped too.
-- Uses common.lua.
--
-- KEYS[1] the session's hash (<prefix>s:<id>)
-- KEYS[2] the shard's deadline index (exp)
-- KEYS[3] the shard's stats hash
-- ARGV[1] the session's id
-- ARGV[2] the shard's key prefix, "<prefix>{<tag>}"
-- ARGV[3] user ("u:" + id, or '' for anyone)
-- Returns the removed session's fields (expired or not); false if it is missing or another user's.

local id, prefix, user = ARGV[1], ARGV[2], ARGV[3]
local key, exp, stats = KEYS[1], KEYS[2], KEYS[3]

local fields = stored_session(key)  -- expired or not: a delete removes it whatever its state
if not fields then
  redis.call('ZREM', exp, id)
  return false
end
if not owned_by(fields, user) then return false end
remove(prefix, exp, stats, id, fields)
return fields
