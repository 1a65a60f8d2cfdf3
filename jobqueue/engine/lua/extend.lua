-- Extend the leases of jobs a worker is still running (its heartbeat).
-- KEYS[1] leases  sorted set: job id -> lease deadline (ms)
-- ARGV[1] lease length in seconds
-- ARGV[2] now in ms, or "" for the Redis server's clock
-- ARGV[3..] job ids
-- Returns the ids that had no lease any more (reclaimed by a reaper): the worker no longer owns them.
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local deadline = now + tonumber(ARGV[1]) * 1000
local lost = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], deadline, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
