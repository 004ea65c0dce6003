-- One cleanup batch in one shard: first the expired (the deadline index up to now), then, for a max-age
-- run, the idle (the activity index, read a little past the cutoff, the exact rule applied to each id in
-- activity order). Each candidate is re-read and re-checked before it goes, so a touch that landed first
-- keeps its session.
-- Uses common.lua.
--
-- KEYS[1]    the shard's activity index (idx)
-- KEYS[2]    the shard's deadline index (exp)
-- KEYS[3]    the shard's stats hash
-- ARGV[1]    the shard's key prefix, "<prefix>{<tag>}"
-- ARGV[2]    now
-- ARGV[3]    max idle (s; '' for none: expired sessions only)
-- ARGV[4]    most sessions to remove (and to fail on)
-- ARGV[5]    1 to return the endings, 0 not to
-- ARGV[6...] ids to leave alone
-- Returns {removed, bytes freed, lifetime (s) summed over the removed, {ids that failed}, endings, how
-- many of the removed were idle rather than expired}.

local prefix, now_text = ARGV[1], ARGV[2]
local now, limit = tonumber(now_text), tonumber(ARGV[4])
local max_idle = tonumber(ARGV[3])
local report = ARGV[5] == '1'  -- endings only while someone listens: they cost the reply its size
local idx, exp, stats = KEYS[1], KEYS[2], KEYS[3]
local excluded, excluded_count = {}, #ARGV - 5
for i = 6, #ARGV do excluded[ARGV[i]] = true end

local removed, idle, freed, lifetime, failed, gone, keys, ended = 0, 0, 0, 0, {}, {}, {}, {}
local seen = {}  -- ids the first sweep took: the second one (max age) must not count them again

local function sweep(index, upto, by_idle)
  local ids = redis.call('ZRANGEBYSCORE', index, '-inf', upto, 'LIMIT', 0, limit + excluded_count)
  for _, id in ipairs(ids) do
    if removed + #failed >= limit then return end
    if not excluded[id] and not seen[id] then
      local key = prefix .. 's:' .. id
      local ok, reply = pcall(redis.call, 'HMGET', key, 'active', 'timeout', 'abs', 'created', 'cost', 'user', 'client')
      if not ok then
        failed[#failed + 1] = id
      else
        local active_text, timeout, abs, created, cost, user, client = unpack(reply)
        if not active_text then  -- its hash already expired by TTL: drop the stale index entries
          gone[#gone + 1] = id
          removed = removed + 1
        else
          local active = tonumber(active_text)
          local expired = now >= deadline_at(active, tonumber(timeout), tonumber(abs))
          if not expired and not (by_idle and now - active >= max_idle) then
            return  -- the re-check: in use again, and everything after it in this index too
          end
          if not expired then idle = idle + 1 end
          if report then ended[#ended + 1] = {id, user, client, created, active_text, expired and 'expired' or 'idle'} end
          gone[#gone + 1] = id
          keys[#keys + 1] = key
          removed = removed + 1
          freed = freed + tonumber(cost)
          lifetime = lifetime + (active - tonumber(created))
          if client ~= '' then drop_pair(prefix, id, user, client) end
          if user ~= '' then redis.call('ZREM', user_key(prefix, user), id) end
        end
      end
      if max_idle then seen[id] = true end
    end
  end
end

sweep(exp, now_text, false)
if max_idle then sweep(idx, num(now - max_idle + 1), true) end
for i = 1, #gone, 500 do
  local last = math.min(i + 499, #gone)
  redis.call('ZREM', idx, unpack(gone, i, last))
  redis.call('ZREM', exp, unpack(gone, i, last))
end
for i = 1, #keys, 500 do
  redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
end
if freed > 0 then redis.call('HINCRBY', stats, 'bytes', -freed) end
return {removed, freed, num(lifetime), failed, ended, idle}
