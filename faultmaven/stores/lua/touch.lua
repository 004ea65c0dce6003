-- Activity on a live session, optionally replacing its data (replace_data) within a size limit.
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
-- ARGV[5] new data (absent: activity only)
-- ARGV[6] the session's cost with the new data (bytes; with ARGV[5])
-- ARGV[7] the size limit of data and metadata together (bytes; with ARGV[5])
-- Returns the session's fields after the touch; false if it is missing, expired or another user's; the
-- size (a number) if the new data is over the limit, with nothing changed.

local id, prefix, now_text, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local data, cost_text, limit = ARGV[5], ARGV[6], ARGV[7]
local key, idx, exp, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(now_text)

local fields = live_session(key, now, user)
if not fields then return false end
if data then
  local size = #data + #fields[META]
  if size > tonumber(limit) then return size end
  redis.call('HSET', key, 'data', data, 'cost', cost_text)
  redis.call('HINCRBY', stats, 'bytes', tonumber(cost_text) - tonumber(fields[COST]))
  fields[DATA] = data
end
activity(prefix, key, idx, exp, stats, id, fields, now, now_text)
return fields
