-- One page of a user's live sessions, most recently active first.
-- Uses common.lua.
--
-- KEYS[1] the shard's deadline index (exp; unused: every user script names the shard's keys alike)
-- KEYS[2] the shard's stats hash (unused)
-- ARGV[1] the user's shard's key prefix, "<prefix>{<tag>}"
-- ARGV[2] now
-- ARGV[3] user ("u:" + id)
-- ARGV[4] page size
-- ARGV[5] offset (sessions skipped, most recent first)
-- Returns {total live, {{id, fields}...}} for the page.

local prefix, user = ARGV[1], ARGV[3]
local now, page_size, offset = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])

local live = live_user_sessions(prefix, user, now)
local page = {}
local first = #live - offset
for i = first, math.max(1, first - page_size + 1), -1 do page[#page + 1] = live[i] end
return {#live, page}
