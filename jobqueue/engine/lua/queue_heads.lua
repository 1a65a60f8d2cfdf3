-- The first job of each priority in a topic's queue: the queue is FIFO within a priority,
-- so the longest-queued job is one of them (the metrics read its age from the database).
-- KEYS[1] queue  sorted set: job id -> (100 - priority) * 2^44 + sequence (see push.lua)
-- ARGV[1] how many priorities at most
-- Returns the ids, highest priority first.
local SHIFT = 17592186044416 -- 2^44, as in push.lua
local heads = {}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
while first[1] and #heads < tonumber(ARGV[1]) do
  heads[#heads + 1] = first[1]
  local band = math.floor(tonumber(first[2]) / SHIFT)
  first = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', (band + 1) * SHIFT), '+inf',
                     'WITHSCORES', 'LIMIT', 0, 1)
end
return heads
