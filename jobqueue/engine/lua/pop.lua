-- Pop the next jobs of a topic and lease them to the caller.
-- KEYS[1] queue   sorted set: job id -> score (lowest score runs first)
-- KEYS[2] leases  sorted set: job id -> lease deadline (ms)
-- KEYS[3] paused  flag: while it exists nothing is popped
-- KEYS[4] lock    sorted set: slot owner token -> expiry (ms), the topic's semaphore
-- ARGV[1] lease length in seconds
-- ARGV[2] how many jobs at most
-- ARGV[3] now in ms, or "" for the Redis server's clock
-- ARGV[4] the caller's slot token, or "" to pop without holding a slot
-- Returns the leased job ids, best first (none if the caller's slot is gone: a worker
-- runs a topic's jobs only while it holds one of its slots).
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {}
end
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if ARGV[4] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[4], ARGV[4])
  if not expiry or tonumber(expiry) <= now then
    return {}
  end
end
local deadline = now + tonumber(ARGV[1]) * 1000
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local ids = {}
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[2], deadline, popped[i])
  ids[#ids + 1] = popped[i]
end
return ids
