-- Acknowledge a finished job and lease the next ones of the same topic, in one call
-- (the worker's steady state: one round trip between two jobs instead of two).
-- KEYS[1] queue     sorted set: job id -> score
-- KEYS[2] leases    sorted set: job id -> lease deadline (ms)
-- KEYS[3] paused    flag: while it exists nothing is popped
-- KEYS[4] entities  hash: entity id -> job id
-- KEYS[5] abort     set of job ids asked to abort
-- KEYS[6] lock      sorted set: slot owner token -> expiry (ms), the topic's semaphore
-- KEYS[7] metrics   hash: the topic's counters and histogram buckets
-- ARGV[1] finished job id
-- ARGV[2] its entity id or ""
-- ARGV[3] lease length in seconds
-- ARGV[4] how many jobs to lease at most
-- ARGV[5] now in ms, or "" for the Redis server's clock
-- ARGV[6] the caller's slot token, or "" to pop without holding a slot
-- ARGV[7] the finished job's tally for the metrics hash ("field=integer" pairs, as in push.lua), or ""
-- Returns the leased job ids, best first (none if the caller's slot is gone).
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[4], ARGV[2])
end
redis.call('SREM', KEYS[5], ARGV[1])
for field, amount in string.gmatch(ARGV[7], '(%S+)=(%S+)') do
  redis.call('HINCRBY', KEYS[7], field, amount)
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {}
end
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if ARGV[6] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[6], ARGV[6])
  if not expiry or tonumber(expiry) <= now then
    return {}
  end
end
local deadline = now + tonumber(ARGV[3]) * 1000
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[4]))
local ids = {}
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[2], deadline, popped[i])
  ids[#ids + 1] = popped[i]
end
return ids
