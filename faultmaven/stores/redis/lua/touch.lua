-- Activity on a live session (get, heartbeat); data writes are update.lua.
-- Uses common.lua.
--
-- KEYS[1] the session's hash (<prefix>s:<id>)
-- KEYS[2] the shard's activity index (idx)
-- KEYS[3] the shard's deadline index (exp)
-- KEYS[4] the shard's stats hash
-- ARGV[1] the session's id
-- ARGV[2] the shard's key prefix, "<prefix>{<tag>}"
-- ARGV[3] now
-- ARGV[4] user ("u:" + id, or '' for anyone)
-- Returns the session's fields after the touch; false if it is missing, expired or another user's.

local id, prefix, now_text, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key, idx, exp, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(now_text)

local fields = live_session(key, now, user)
if not fields then return false end
activity(prefix, key, idx, exp, stats, id, fields, now, now_text)
return fields
