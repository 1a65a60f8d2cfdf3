-- The live holders of a topic's slots (expired ones are dropped first).
-- KEYS[1] lock     sorted set: owner token -> expiry (ms)
-- KEYS[2] holders  hash: owner token -> JSON
-- ARGV[1] now in ms, or "" for the Redis server's clock
-- Returns a flat list: token, info, expiry (ms), ...
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, token in ipairs(expired) do
  redis.call('ZREM', KEYS[1], token)
  redis.call('HDEL', KEYS[2], token)
end
local out = {}
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or '{}'
  out[#out + 1] = live[i + 1]
end
return out
