-- Renew slots a worker holds (its heartbeat). An expired slot is not revived: it may
-- already belong to someone else.
-- KEYS[1] lock     sorted set: owner token -> expiry (ms)
-- KEYS[2] holders  hash: owner token -> JSON
-- ARGV[1] owner token
-- ARGV[2] TTL in seconds
-- ARGV[3] now in ms, or "" for the Redis server's clock
-- Returns 1 if renewed, 0 if the slot was lost.
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) * 1000, ARGV[1])
return 1
