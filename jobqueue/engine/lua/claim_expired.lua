-- Claim expired leases for the reaper, which then requeues or fails each job in the
-- database and pushes it back (push.lua). A claimed lease is extended by a grace
-- period, so two reapers never handle one job and a reaper that dies mid-way only
-- delays it: the lease expires again and another reaper claims it.
-- KEYS[1] leases  sorted set: job id -> lease deadline (ms)
-- ARGV[1] grace in seconds
-- ARGV[2] how many at most
-- ARGV[3] now in ms, or "" for the Redis server's clock
-- Returns the claimed job ids.
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local deadline = now + tonumber(ARGV[1]) * 1000
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], deadline, id)
end
return ids
