-- Prepended to update.lua when the store loads it: an RFC 7396 merge patch applied to JSON text, as
-- faultmaven/merge_patch.py applies it in the memory store. It reads no KEYS or ARGV itself.
--
-- The texts are compact JSON as the service writes all session data and every patch (Python's json.dumps
-- with separators (',', ':') and ensure_ascii=False): no whitespace, and one spelling per key, so a key's
-- text names it. The merge works on that text and never decodes a value: every value it does not replace
-- is copied byte for byte (cjson would round numbers to 14 digits, big integers to doubles, and could not
-- tell an empty array from an empty object), existing keys keep their place and new keys follow in the
-- patch's order, so the result is the same bytes the memory store builds.

-- The index just past the string that opens at `i`: the next quote not escaped by an odd run of
-- backslashes. Plain finds only: Lua's pattern classes cost tens of nanoseconds per character.
local function string_end(text, i)
  local j = i
  while true do
    j = string.find(text, '"', j + 1, true)
    local k = j - 1
    while string.byte(text, k) == 92 do k = k - 1 end  -- the opening quote ends the run at the latest
    if (j - k) % 2 == 1 then return j + 1 end
  end
end

-- The next `c` in text at or after `from` (past the end if none).
local function seek(text, c, from)
  return string.find(text, c, from, true) or #text + 1
end

-- The index just past the object or array that opens at `i`: brackets counted outside strings, each
-- kind of character found by its own plain find and kept until passed.
local function container_end(text, i)
  local q, o1, c1 = seek(text, '"', i), seek(text, '{', i), seek(text, '}', i)
  local o2, c2 = seek(text, '[', i), seek(text, ']', i)
  local depth = 0
  while true do
    local j = math.min(q, o1, c1, o2, c2)
    if j == q then
      local after = string_end(text, j)
      q = seek(text, '"', after)
      if o1 < after then o1 = seek(text, '{', after) end
      if c1 < after then c1 = seek(text, '}', after) end
      if o2 < after then o2 = seek(text, '[', after) end
      if c2 < after then c2 = seek(text, ']', after) end
    else
      if j == o1 then
        depth, o1 = depth + 1, seek(text, '{', j + 1)
      elseif j == o2 then
        depth, o2 = depth + 1, seek(text, '[', j + 1)
      elseif j == c1 then
        depth, c1 = depth - 1, seek(text, '}', j + 1)
      else
        depth, c2 = depth - 1, seek(text, ']', j + 1)
      end
      if depth == 0 then return j + 1 end
    end
  end
end

-- The index just past the value that starts at `i`.
local function value_end(text, i)
  local c = string.sub(text, i, i)
  if c == '"' then return string_end(text, i) end
  if c == '{' or c == '[' then return container_end(text, i) end
  return string.find(text, '[,}]', i) or #text + 1  -- a number, true, false or null: a member's value
end

-- The members of the object text[first..], in order: {key text, value's first index, value's last index}.
local function members(text, first)
  local out = {}
  local i = first + 1
  if string.sub(text, i, i) == '}' then return out end
  while true do
    local key_end = string_end(text, i)
    local stop = value_end(text, key_end + 1)  -- past the ':'
    out[#out + 1] = {string.sub(text, i, key_end - 1), key_end + 1, stop - 1}
    if string.sub(text, stop, stop) == '}' then return out end
    i = stop + 1  -- past the ','
  end
end

local merge_object

-- The text a patch member `m` of `patch` leaves for its key, given the target's member `t` of `target`
-- (nil if the key is new): nil to remove it (null), a merge into an object, else the patch's value.
local function merged_value(target, t, patch, m)
  local c = string.sub(patch, m[2], m[2])
  if c == 'n' then return nil end  -- only null starts with n
  if c ~= '{' then return string.sub(patch, m[2], m[3]) end
  if t and string.sub(target, t[2], t[2]) == '{' then return merge_object(target, t[2], patch, m[2]) end
  return merge_object(nil, nil, patch, m[2])  -- into anything else: the patch object without its nulls
end

-- The object at target[target_first] (nil: an empty one) with the object at patch[patch_first] merged in.
merge_object = function(target, target_first, patch, patch_first)
  local patched, by_key = members(patch, patch_first), {}
  for _, m in ipairs(patched) do by_key[m[1]] = m end
  local out = {}
  if target then
    for _, t in ipairs(members(target, target_first)) do
      local m = by_key[t[1]]
      if m then
        by_key[t[1]] = false  -- done: not a new key
        local value = merged_value(target, t, patch, m)
        if value then out[#out + 1] = t[1] .. ':' .. value end
      else
        out[#out + 1] = t[1] .. ':' .. string.sub(target, t[2], t[3])
      end
    end
  end
  for _, m in ipairs(patched) do
    if by_key[m[1]] then
      local value = merged_value(nil, nil, patch, m)
      if value then out[#out + 1] = m[1] .. ':' .. value end
    end
  end
  return '{' .. table.concat(out, ',') .. '}'
end

-- The stored data object with the patch object merged in, both as compact JSON text.
local function merge_patch(data, patch)
  return merge_object(data, 1, patch, 1)
end
