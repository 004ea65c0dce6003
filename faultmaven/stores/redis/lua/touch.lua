-- Activity on a live session (get, heartbeat); data writes are update.lua. Four Redis commands with the
-- EVALSHA: read the session, write its last activity, move its deadline.
-- Uses common.lua.
--
-- KEYS[1] the session's hash (<prefix>s:<id>)
-- KEYS[2] the shard's deadline index (exp)
-- KEYS[3] the shard's stats hash (unused: every session script names the shard's keys alike)
-- ARGV[1] the session's id
-- ARGV[2] the shard's key prefix, "<prefix>{<tag>}"
-- ARGV[3] now
-- ARGV[4] user ("u:" + id, or '' for anyone)
-- ARGV[5] the touch's order (breaks ties of last activity)
-- Returns the session's fields after the touch; false if it is missing, expired or another user's.

local id, prefix, now_text, user, order = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key, exp = KEYS[1], KEYS[2]
local now = tonumber(now_text)

local fields = live_session(key, now, user)
if not fields then return false end
activity(prefix, key, exp, id, fields, now, now_text, order)
return fields
