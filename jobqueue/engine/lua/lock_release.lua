-- Give back a slot (normal shutdown), or every slot by force (ARGV[1] = "").
-- KEYS[1] lock     sorted set: owner token -> expiry (ms)
-- KEYS[2] holders  hash: owner token -> JSON
-- ARGV[1] owner token, or "" to free all slots (the unlock command)
-- Returns the released holders as a flat list: token, info, token, info, ...
local released = {}
local tokens
if ARGV[1] == '' then
  tokens = redis.call('ZRANGE', KEYS[1], 0, -1)
else
  tokens = {ARGV[1]}
end
for _, token in ipairs(tokens) do
  if redis.call('ZREM', KEYS[1], token) == 1 then
    released[#released + 1] = token
    released[#released + 1] = redis.call('HGET', KEYS[2], token) or '{}'
  end
  redis.call('HDEL', KEYS[2], token)
end
return released
