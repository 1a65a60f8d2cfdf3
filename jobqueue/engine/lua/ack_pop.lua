-- Acknowledge finished jobs and lease the next ones of the same topic, in one call
-- (the worker's steady state: one round trip for one job or for a batch of them).
-- KEYS[1] queue     sorted set: job id -> score
-- KEYS[2] leases    sorted set: job id -> lease deadline (ms)
-- KEYS[3] paused    flag: while it exists nothing is popped
-- KEYS[4] entities  hash: entity id -> job id
-- KEYS[5] abort     set of job ids asked to abort
-- KEYS[6] lock      sorted set: slot owner token -> expiry (ms), the topic's semaphore
-- KEYS[7] metrics   hash: the topic's counters and histogram buckets
-- ARGV[1] lease length in seconds
-- ARGV[2] how many jobs to lease at most (0: only acknowledge)
-- ARGV[3] now in ms, or "" for the Redis server's clock
-- ARGV[4] the caller's slot token, or "" to pop without holding a slot
-- ARGV[5..] the finished jobs, three values each: job id, its entity id or "", and its
--           tally for the metrics hash ("field=integer" pairs, as in push.lua) or ""
-- Returns the leased job ids, best first (none if the caller's slot is gone).
for i = 5, #ARGV - 2, 3 do
  local id, entity = ARGV[i], ARGV[i + 1]
  redis.call('ZREM', KEYS[2], id)
  if entity ~= '' and redis.call('HGET', KEYS[4], entity) == id then
    redis.call('HDEL', KEYS[4], entity)
  end
  redis.call('SREM', KEYS[5], id)
  for field, amount in string.gmatch(ARGV[i + 2], '(%S+)=(%S+)') do
    redis.call('HINCRBY', KEYS[7], field, amount)
  end
end
local count = tonumber(ARGV[2])
if count < 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return {}
end
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if ARGV[4] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[6], ARGV[4])
  if not expiry or tonumber(expiry) <= now then
    return {}
  end
end
local deadline = now + tonumber(ARGV[1]) * 1000
local popped = redis.call('ZPOPMIN', KEYS[1], count)
local ids = {}
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[2], deadline, popped[i])
  ids[#ids + 1] = popped[i]
end
return ids
