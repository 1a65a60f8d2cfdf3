-- Take one of a topic's N slots (a semaphore), or renew the caller's slot.
-- KEYS[1] lock     sorted set: owner token -> expiry (ms)
-- KEYS[2] holders  hash: owner token -> JSON {worker, host, pid, since}
-- ARGV[1] owner token
-- ARGV[2] number of slots (the topic's concurrency)
-- ARGV[3] TTL in seconds
-- ARGV[4] holder info (JSON)
-- ARGV[5] now in ms, or "" for the Redis server's clock
-- Returns 1 if the caller holds a slot, 0 if all slots are taken.
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, token in ipairs(expired) do
  redis.call('ZREM', KEYS[1], token)
  redis.call('HDEL', KEYS[2], token)
end
local expiry = now + tonumber(ARGV[3]) * 1000
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  return 1
end
return 0
