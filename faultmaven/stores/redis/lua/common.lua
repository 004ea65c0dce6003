-- Shared by the session scripts and prepended to each of them when the store loads it (a Redis script
-- cannot include a file): the session hash's fields, the expiry rule, the "is this session live" check,
-- activity, and removal with every index kept in step. It reads no KEYS or ARGV itself.
--
-- Every `user` value is "u:" + the user id, or '' for none. Timestamps arrive as repr() strings of
-- Python floats, so tonumber() gives back exactly the doubles Python computed.

-- The fields of a session hash, in the order the scripts read them and return them to the store. A hash
-- stored before sessions had versions has no 'version' (false in an HMGET): its data is at version 1.
-- 'order' breaks ties of last activity (see activity); a hash stored before it existed has none.
local FIELDS = {
  'user', 'client', 'type', 'created', 'active', 'timeout', 'abs', 'data', 'meta', 'cost', 'version', 'order',
}
-- The place of each field in FIELDS (and in an HMGET of FIELDS).
local USER, CLIENT, TYPE, CREATED, ACTIVE, TIMEOUT, ABS, DATA, META, COST, VERSION, ORDER = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12

-- The exact deadline of a session last active at `active` (numbers): its idle timeout past that, capped
-- by its absolute deadline. Expired from the deadline on (now >= deadline).
local function deadline_at(active, timeout, abs)
  return math.min(active + timeout, abs)
end

-- The session's exact deadline, from its fields.
local function deadline(fields)
  return deadline_at(tonumber(fields[ACTIVE]), tonumber(fields[TIMEOUT]), tonumber(fields[ABS]))
end

-- The native TTL (ms) of a session's hash and of its user's index, a safety net for sessions no cleanup
-- reaches: 60 s past the absolute deadline. Set when the session is created, it never moves with activity.
local function ttl_ms(fields, now)
  return math.floor((tonumber(fields[ABS]) - now + 60) * 1000)
end

local function num(x) return string.format('%.17g', x) end  -- exact: Lua's own tostring keeps 14 digits

local function user_key(prefix, user) return prefix .. 'u:' .. string.sub(user, 3) end

-- Whether `user` ('' for anyone) may act on the session: anyone on a session of no user, else its owner.
local function owned_by(fields, user)
  local owner = fields[USER]
  return user == '' or owner == '' or owner == user
end

-- The session's fields (in FIELDS order) if its hash is stored, live or not; else nil. One HMGET.
local function stored_session(key)
  local fields = redis.call('HMGET', key, unpack(FIELDS))
  if not fields[ACTIVE] then return nil end
  return fields
end

-- The session's fields if its hash is stored, its deadline is still ahead at `now` and `user` may act
-- on it; else nil: the check every script that acts on a live session starts with.
local function live_session(key, now, user)
  local fields = stored_session(key)
  if not fields then return nil end
  if now >= deadline(fields) then return nil end
  if not owned_by(fields, user) then return nil end
  return fields
end

-- The user's index lives at least as long as the session just added to it (or kept in it).
local function keep_user_index(prefix, user, ttl)
  local uk = user_key(prefix, user)
  if redis.call('PTTL', uk) < ttl then redis.call('PEXPIRE', uk, ttl) end
end

-- Activity at `now`: two writes, the last activity (with its order, see below) and the deadline index.
-- Nothing else moves with a touch: the TTL safety nets follow the absolute deadline, and a user's sessions
-- are ordered when they are read (user_sessions) from each one's last activity. `order` breaks ties of
-- last activity in the order the store made the touches (a counter of the calling process).
-- A hash stored before 'order' existed had TTLs that moved with each touch: its first touch sets them
-- once to the absolute deadline.
local function activity(prefix, key, exp, id, fields, now, now_text, order)
  local legacy = not fields[ORDER]
  fields[ACTIVE], fields[ORDER] = now_text, order
  redis.call('HSET', key, 'active', now_text, 'order', order)
  redis.call('ZADD', exp, num(deadline(fields)), id)
  if legacy then
    local ttl = ttl_ms(fields, now)
    redis.call('PEXPIRE', key, ttl)
    if fields[USER] ~= '' then keep_user_index(prefix, fields[USER], ttl) end
  end
end

-- The key of the session a client resumes: per client, and per user for a signed-in one.
local function pair_key(prefix, user, client)
  if user == '' then return prefix .. 'c:' .. client end
  return prefix .. 'c:' .. client .. string.char(31) .. string.sub(user, 3)
end

-- Drops the client's resume pair if it still names this session.
local function drop_pair(prefix, id, user, client)
  if client and client ~= '' then
    local pk = pair_key(prefix, user, client)
    if redis.call('GET', pk) == id then redis.call('DEL', pk) end
  end
end

-- Removes the session and every entry that names it: the deadline index, its bytes, pair and user index.
local function remove(prefix, exp, stats, id, fields)
  local user = fields[USER]
  redis.call('ZREM', exp, id)
  redis.call('DEL', prefix .. 's:' .. id)
  redis.call('HINCRBY', stats, 'bytes', -tonumber(fields[COST]))
  drop_pair(prefix, id, user, fields[CLIENT])
  if user ~= '' then redis.call('ZREM', user_key(prefix, user), id) end
end

-- An ending as the store reads it: {id, user, client, created, last activity, reason}.
local function ending(id, fields, reason)
  return {id, fields[USER], fields[CLIENT], fields[CREATED], fields[ACTIVE], reason}
end

-- Whether session a = {id, fields} was active before b: by last activity, then by the order of the
-- touches (0 for a hash stored before 'order' existed), then by id (never equal: a total order).
local function active_before(a, b)
  local fa, fb = a[2], b[2]
  local ta, tb = tonumber(fa[ACTIVE]), tonumber(fb[ACTIVE])
  if ta ~= tb then return ta < tb end
  local oa, ob = tonumber(fa[ORDER]) or 0, tonumber(fb[ORDER]) or 0
  if oa ~= ob then return oa < ob end
  return a[1] < b[1]
end

-- The user's sessions, least recently active first, as {id, fields}; index entries whose hash is gone
-- (the TTL safety net took it) are dropped on the way, so they never linger or count. The index holds
-- only who the sessions are (it changes when one is created, renamed or removed); their order is read here.
local function user_sessions(prefix, user)
  local uk = user_key(prefix, user)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', uk, 0, -1)) do
    local fields = stored_session(prefix .. 's:' .. id)
    if fields then out[#out + 1] = {id, fields} else redis.call('ZREM', uk, id) end
  end
  table.sort(out, active_before)
  return out
end

-- The user's sessions still live at `now`, least recently active first, as {id, fields}.
local function live_user_sessions(prefix, user, now)
  local live = {}
  for _, s in ipairs(user_sessions(prefix, user)) do
    local _, fields = unpack(s)
    if now < deadline(fields) then live[#live + 1] = s end
  end
  return live
end

