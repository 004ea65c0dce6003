-- A write of a live session's data, replacing it or merging a patch into it (RFC 7396, merge_patch.lua),
-- if the caller's expected version is still the current one and the result fits the size limit; with
-- activity. The check and the write are this one step. Uses common.lua and merge_patch.lua.
--
-- KEYS[1] the session's hash (<prefix>s:<id>)
-- KEYS[2] the shard's deadline index (exp)
-- KEYS[3] the shard's stats hash
-- ARGV[1] the session's id
-- ARGV[2] the shard's key prefix, "<prefix>{<tag>}"
-- ARGV[3] now
-- ARGV[4] user ("u:" + id, or '' for anyone)
-- ARGV[5] the new data, or with ARGV[9] a merge patch of it (compact JSON)
-- ARGV[6] the session's cost besides the data's length (bytes)
-- ARGV[7] the size limit of data and metadata together (bytes)
-- ARGV[8] the version the data must be at ('' for any)
-- ARGV[9] '1' if ARGV[5] is a merge patch, else '0'
-- ARGV[10] '1' while the store refuses to grow (its master in the memory reserve), else '0'
-- ARGV[11] the write's order (breaks ties of last activity)
-- Returns the session's fields after the write; false if it is missing, expired or another user's;
-- {'version', current version} on a version mismatch, {'size', size} over the limit and {'full', size} for
-- data that would grow while the store refuses to grow, nothing changed.
-- The version goes up by one only if the data's bytes change; a hash stored without one is at version 1.

local id, prefix, now_text, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local data, base_cost, limit, expected, merge = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]
local no_growth, order = ARGV[10] == '1', ARGV[11]
local key, exp, stats = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(now_text)

local fields = live_session(key, now, user)
if not fields then return false end
local version = tonumber(fields[VERSION]) or 1
if expected ~= '' and tonumber(expected) ~= version then return {'version', version} end
if merge == '1' then data = merge_patch(fields[DATA], data) end
local size = #data + #fields[META]
if size > limit then return {'size', size} end
if no_growth and #data > #fields[DATA] then return {'full', #data} end
if data ~= fields[DATA] then
  local cost = base_cost + #data
  version = version + 1
  redis.call('HSET', key, 'data', data, 'cost', cost, 'version', version)
  redis.call('HINCRBY', stats, 'bytes', cost - tonumber(fields[COST]))
  fields[DATA], fields[COST], fields[VERSION] = data, tostring(cost), tostring(version)
end
activity(prefix, key, exp, id, fields, now, now_text, order)
return fields
