-- One cleanup batch in one shard, read from the deadline index: first the expired (the index up to now),
-- then, for a max-age run, the idle. Each candidate is re-read and re-checked before it goes, so a touch
-- that landed first keeps its session.
-- Uses common.lua.
--
-- The index is in deadline order, min(last activity + timeout, absolute deadline). A session idle for the
-- max age has a deadline at most now - max age + its timeout, so a max-age run reads the index up to now -
-- max age + the longest timeout the shard stores ('tmax' in the stats hash, set by create.lua). With one
-- timeout that is exactly the idle sessions, and the few whose absolute deadline comes first; those are
-- skipped, and the run goes on past them.
--
-- KEYS[1]    the shard's deadline index (exp)
-- KEYS[2]    the shard's stats hash
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
local exp, stats = KEYS[1], KEYS[2]
local excluded, excluded_count = {}, #ARGV - 5
for i = 6, #ARGV do excluded[ARGV[i]] = true end

local removed, idle, freed, lifetime, failed, gone, keys, ended = 0, 0, 0, 0, {}, {}, {}, {}
local seen = {}  -- ids the first sweep took or kept: the second one (max age) must not count them again

-- Re-checks one candidate and takes it if it is due. Returns false if it is in use: for the expired
-- sweep, every later entry of the index is then in use too.
local function take(id, by_idle)
  local key = prefix .. 's:' .. id
  local ok, reply = pcall(redis.call, 'HMGET', key, 'active', 'timeout', 'abs', 'created', 'cost', 'user', 'client')
  if not ok then
    failed[#failed + 1] = id
    return true
  end
  local active_text, timeout, abs, created, cost, user, client = unpack(reply)
  if not active_text then  -- its hash already expired by TTL: drop the stale index entry
    gone[#gone + 1] = id
    removed = removed + 1
    return true
  end
  local active = tonumber(active_text)
  local expired = now >= deadline_at(active, tonumber(timeout), tonumber(abs))
  if not expired and not (by_idle and now - active >= max_idle) then return false end
  if not expired then idle = idle + 1 end
  if report then ended[#ended + 1] = {id, user, client, created, active_text, expired and 'expired' or 'idle'} end
  gone[#gone + 1] = id
  keys[#keys + 1] = key
  removed = removed + 1
  freed = freed + tonumber(cost)
  lifetime = lifetime + (active - tonumber(created))
  if client ~= '' then drop_pair(prefix, id, user, client) end
  if user ~= '' then redis.call('ZREM', user_key(prefix, user), id) end
  return true
end

-- The index up to `upto`, a page at a time (nothing leaves it before the batch ends, so offsets hold).
local function sweep(upto, by_idle)
  local offset = 0
  while true do
    local ids = redis.call('ZRANGEBYSCORE', exp, '-inf', upto, 'LIMIT', offset, limit + excluded_count)
    if #ids == 0 then return end
    for _, id in ipairs(ids) do
      if removed + #failed >= limit then return end
      if not excluded[id] and not seen[id] then
        if not take(id, by_idle) and not by_idle then return end
        if max_idle then seen[id] = true end
      end
    end
    offset = offset + #ids
  end
end

sweep(now_text, false)
if max_idle then
  local tmax = tonumber(redis.call('HGET', stats, 'tmax'))
  sweep(tmax and num(now - max_idle + tmax + 1) or '+inf', true)  -- +1: read a little past the bound
end
for i = 1, #gone, 500 do
  redis.call('ZREM', exp, unpack(gone, i, math.min(i + 499, #gone)))
end
for i = 1, #keys, 500 do
  redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
end
if freed > 0 then redis.call('HINCRBY', stats, 'bytes', -freed) end
redis.call('DEL', prefix .. 'idx')  -- the activity index of earlier versions: nothing reads it now
return {removed, freed, num(lifetime), failed, ended, idle}
