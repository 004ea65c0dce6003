-- Resumes the live session of the (user, client) pair, else inserts the new session, first ending the
-- user's least recently active live sessions past the per-user limit.
-- Uses common.lua.
--
-- KEYS[1]  the new session's hash (<prefix>s:<id>)
-- KEYS[2]  the shard's deadline index (exp)
-- KEYS[3]  the shard's stats hash
-- ARGV[1]  the new session's id
-- ARGV[2]  the shard's key prefix, "<prefix>{<tag>}"
-- ARGV[3]  now
-- ARGV[4]  user ("u:" + id, or '')
-- ARGV[5]  client id ('' for none)
-- ARGV[6]  session type
-- ARGV[7]  created
-- ARGV[8]  last activity
-- ARGV[9]  idle timeout (s)
-- ARGV[10] absolute deadline
-- ARGV[11] data
-- ARGV[12] metadata
-- ARGV[13] cost (bytes)
-- ARGV[14] most live sessions per user (0: no limit)
-- ARGV[15] the data's version (1 for a new session)
-- ARGV[16] the create's order (breaks ties of last activity)
-- Returns {{id, fields}, {}} for a resumed session, {{id}, endings} for an inserted one, false if the id
-- is already stored by another create. A create retried after its reply was lost (redis-py's cluster
-- client retries on a timeout) finds the session it stored itself, same owner and creation time, and
-- answers {{id}, {}} again.

local id, prefix, now_text, user, client = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local kind, created_text, active_text, timeout_text = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local absolute_text, data, meta, cost_text = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local max_per_user, version_text, order = tonumber(ARGV[14]), ARGV[15], ARGV[16]
local key, exp, stats = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(now_text)

local pk = nil
if client ~= '' then
  pk = pair_key(prefix, user, client)
  local existing = redis.call('GET', pk)
  if existing then
    local existing_key = prefix .. 's:' .. existing
    local fields = live_session(existing_key, now, '')
    if fields then
      activity(prefix, existing_key, exp, existing, fields, now, now_text, order)
      return {{existing, fields}, {}}
    end
  end
end
if redis.call('EXISTS', key) == 1 then
  local owner, created = unpack(redis.call('HMGET', key, 'user', 'created'))
  if owner == user and created == created_text then return {{id}, {}} end
  return false
end

local ended = {}
if user ~= '' and max_per_user > 0 then
  local live = live_user_sessions(prefix, user, now)
  for i = 1, #live - max_per_user + 1 do
    local old_id, old_fields = unpack(live[i])
    remove(prefix, exp, stats, old_id, old_fields)
    ended[#ended + 1] = ending(old_id, old_fields, 'user_limit')
  end
end

local fields = {
  [USER] = user, [CLIENT] = client, [TYPE] = kind, [CREATED] = created_text, [ACTIVE] = active_text,
  [TIMEOUT] = timeout_text, [ABS] = absolute_text, [DATA] = data, [META] = meta, [COST] = cost_text,
  [VERSION] = version_text, [ORDER] = order,
}
local field_pairs = {}
for i = 1, #FIELDS do field_pairs[2 * i - 1], field_pairs[2 * i] = FIELDS[i], fields[i] end
redis.call('HSET', key, unpack(field_pairs))  -- every field in one command
redis.call('HINCRBY', stats, 'bytes', cost_text)
redis.call('ZADD', exp, num(deadline(fields)), id)
local ttl = ttl_ms(fields, now)
redis.call('PEXPIRE', key, ttl)
if user ~= '' then
  redis.call('ZADD', user_key(prefix, user), created_text, id)  -- who; the order is read from the sessions
  keep_user_index(prefix, user, ttl)
end
-- The longest idle timeout stored in the shard bounds what a max-age cleanup reads (remove_idle.lua).
if (tonumber(redis.call('HGET', stats, 'tmax')) or 0) < tonumber(timeout_text) then
  redis.call('HSET', stats, 'tmax', timeout_text)
end
if pk then redis.call('SET', pk, id, 'PX', math.floor((tonumber(absolute_text) - now + 60) * 1000)) end
return {{id}, ended}
