-- Ends every session of a user and drops the user's index.
-- Uses common.lua.
--
-- KEYS[1] the shard's deadline index (exp)
-- KEYS[2] the shard's stats hash
-- ARGV[1] the user's shard's key prefix, "<prefix>{<tag>}"
-- ARGV[2] now
-- ARGV[3] user ("u:" + id)
-- Returns the endings: 'revoked' for a session live at now, 'expired' for one past its deadline.

local prefix, user = ARGV[1], ARGV[3]
local exp, stats = KEYS[1], KEYS[2]
local now = tonumber(ARGV[2])

local ended = {}
for _, s in ipairs(user_sessions(prefix, user)) do
  local id, fields = unpack(s)
  remove(prefix, exp, stats, id, fields)
  ended[#ended + 1] = ending(id, fields, now < deadline(fields) and 'revoked' or 'expired')
end
redis.call('DEL', user_key(prefix, user))
return ended
