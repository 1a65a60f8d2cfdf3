-- Move due scheduled jobs into the queue. Atomic, so many workers running it at
-- once never promote a job twice.
-- KEYS[1] scheduled  sorted set: job id -> due time (ms)
-- KEYS[2] schedprio  hash: job id -> priority
-- KEYS[3] queue      sorted set
-- KEYS[4] seq        counter
-- KEYS[5] wake       list idle workers block on
-- ARGV[1] how many at most
-- ARGV[2] now in ms, or "" for the Redis server's clock
-- Returns the promoted job ids.
local SHIFT = 17592186044416
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local priority = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if not redis.call('ZSCORE', KEYS[3], id) then
    redis.call('ZADD', KEYS[3], (100 - priority) * SHIFT + redis.call('INCR', KEYS[4]), id)
  end
end
if #ids > 0 then
  local tokens = {}
  for i = 1, math.min(#ids, 64) do tokens[i] = '1' end
  redis.call('RPUSH', KEYS[5], unpack(tokens))
  redis.call('LTRIM', KEYS[5], 0, 63)
end
return ids
