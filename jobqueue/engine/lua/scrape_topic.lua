-- One topic's numbers for a metrics scrape, in one call (a scrape pipelines one per topic).
-- KEYS[1] queue      sorted set: job id -> (100 - priority) * 2^44 + sequence (see push.lua)
-- KEYS[2] scheduled  sorted set: job id -> due time (ms)
-- KEYS[3] leases     sorted set: job id -> lease deadline (ms)
-- KEYS[4] metrics    hash: the topic's counters and histogram buckets
-- ARGV[1] how many priorities' queue heads to return at most
-- Returns {queued, scheduled, leased, the metrics hash (field, value, ...), the queue heads}.
-- The heads are the first job of each priority, highest first: the queue is FIFO within a
-- priority, so the longest-queued job is one of them (the scrape reads its age from the database).
local SHIFT = 17592186044416 -- 2^44, as in push.lua
local heads = {}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
while first[1] and #heads < tonumber(ARGV[1]) do
  heads[#heads + 1] = first[1]
  local band = math.floor(tonumber(first[2]) / SHIFT)
  first = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', (band + 1) * SHIFT), '+inf',
                     'WITHSCORES', 'LIMIT', 0, 1)
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        redis.call('HGETALL', KEYS[4]), heads}
